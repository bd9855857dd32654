"""`ragtune eval`: score predictions (llm), compare runs side by side (compare), the RAG 2x2 (rag).

Imports of the eval package (and, through it, sentence-transformers/torch) happen inside the
commands, so `ragtune eval --help` stays light.
"""
from __future__ import annotations

import click

from ..core.config import config_options


def _llm_config_cls():
    from ..eval.runner import LlmEvalConfig

    return LlmEvalConfig


@click.group("eval", help="Score predictions; compare runs side by side.")
def eval_group() -> None:
    pass


@eval_group.command("llm")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML file with the same keys as the flags (flags win).")
@config_options(_llm_config_cls())
def llm(config_path, **values):
    """Score a predictions file against an eval set (exact, cosine, origin, ...).

    Writes OUTPUT/eval-<run id>/ with items.json (every item with each score, status and reason),
    summary.json, report.md (the chapter-style table) and report.html.
    """
    from ..eval.runner import LlmEvalConfig, evaluate_llm

    cfg = LlmEvalConfig.from_sources(config_path, **values)
    run = evaluate_llm(cfg)
    click.echo((run.path / "report.md").read_text(encoding="utf-8"))
    click.echo(f"run written to {run.path}")


@eval_group.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--output", "-o", default=".", show_default=True, type=click.Path(file_okay=False),
              help="directory for compare-<run id>.md and .html")
@click.option("--spread", default=0.3, show_default=True, type=float,
              help="a continuous score differing by more than this counts as a disagreement")
def compare(runs, output, spread):
    """Put eval runs side by side (markdown + self-contained HTML with bar charts).

    Each RUN is a directory written by `ragtune eval llm`, or a parent holding eval-* runs.
    """
    from ..eval.report import compare_runs

    paths = compare_runs(list(runs), output, spread=spread)
    click.echo(paths["markdown"].read_text(encoding="utf-8"))
    click.echo(f"markdown: {paths['markdown']}\nhtml: {paths['html']}")


try:
    from .eval_retrieval import retrieval
    eval_group.add_command(retrieval)
except ModuleNotFoundError as _exc:
    if _exc.name != f"{__package__}.eval_retrieval":
        raise


def _rag_config_cls():
    from ..eval.rag_eval import RagEvalConfig

    return RagEvalConfig


@eval_group.command("rag")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML file with the same keys as the flags (flags win).")
@click.option("--embedder", "embedder", multiple=True,
              help="LABEL=EMBEDDER that retrieves, repeatable (e.g. base=all-MiniLM-L6-v2); --embed is the cosine metric's.")
@click.option("--llm", "llm", multiple=True, help="LABEL=LLM (model, dir or http:// URL), repeatable.")
@config_options(_rag_config_cls(), exclude=("embeds", "llms"))
def rag(config_path, embedder, llm, **values):
    """The same questions through the whole RAG pipeline, every --embedder x every --llm (base/tuned x
    base/tuned): retrieval metrics per embedder, answer metrics per cell, one markdown + HTML report.

    \b
    ragtune eval rag --evalset synth/eval.json --kb synth/kb --output rag-eval \\
        --embedder base=all-MiniLM-L6-v2 --embedder tuned=out/embed \\
        --llm base=gemma-3-270m --llm tuned=out/llm
    """
    from ..eval.rag_eval import RagEvalConfig, evaluate_rag, parse_labelled

    if embedder:
        values["embeds"] = parse_labelled(embedder, "embedder")
    if llm:
        values["llms"] = parse_labelled(llm, "llm")
    cfg = RagEvalConfig.from_sources(config_path, **values)
    evaluate_rag(cfg)
    click.echo((__import__("pathlib").Path(cfg.output) / "report.md").read_text(encoding="utf-8"))
    click.echo(f"report: {cfg.output}/report.md (HTML: {cfg.output}/report.html)")
