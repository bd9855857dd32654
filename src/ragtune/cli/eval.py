"""`ragtune eval`: score predictions (llm), compare runs side by side (compare).

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
