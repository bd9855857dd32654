"""`ragtune demo`: offline end-to-end demo on the bundled models."""
from __future__ import annotations

import click


@click.command("demo")
@click.option("--output", default="ragtune-demo", show_default=True, help="Directory for data, run and report.")
@click.option("--seed", default=0, show_default=True, help="Seed of the generated data set and of training.")
@click.option("--machines", "n_machines", default=50, show_default=True,
              help="Fictional machines to generate (4 questions each; 20% of manuals held out).")
@click.option("--llm", default="gemma-3-270m", show_default=True, help="LLM to fine-tune.")
@click.option("--embed", default="all-MiniLM-L6-v2", show_default=True, help="Embedder to fine-tune (and of cosine).")
@click.option("--teacher", default=None,
              help="Teacher URL or model for data synth (default: the demo's manuals teacher, not an LLM).")
def demo(output: str, seed: int, n_machines: int, llm: str, embed: str, teacher: str | None) -> None:
    """From a folder of fictional manuals to two tuned models with no labelled data: a teacher writes
    questions (data synth), gemma-3-270m and all-MiniLM-L6-v2 are fine-tuned on them, and base/tuned
    embedder x base/tuned LLM are evaluated on held-out manuals; then a small RAG answers questions."""
    import time
    import warnings

    from ..workflow.demo import run_demo

    _quiet_libraries()
    warnings.filterwarnings("ignore", category=FutureWarning)

    started = time.time()
    click.echo(f"ragtune demo -> {output}  (data: {n_machines} fictional machine manuals, seed {seed})")
    res = run_demo(output, seed=seed, n_machines=n_machines, llm=llm, embed=embed, teacher=teacher)
    click.echo(f"\nteacher: {res.teacher}")
    click.echo("\nBase vs fine-tuned (embedder x LLM) on the questions of held-out manuals:\n")
    report = res.report_md.read_text(encoding="utf-8")
    click.echo(report.split("\n## Items where")[0].split("# RAG eval", 1)[-1].split("\n", 1)[-1].strip())
    click.echo("\nRAG over the manuals with the tuned model:")
    for row in res.rag_answers:
        mark = "right manual" if row["retrieved_right_manual"] else "WRONG manual"
        click.echo(f"  Q: {row['question']}\n     retrieved: {mark}\n     answer: {row['answer']!r}   "
                   f"(reference: {row['reference']!r})")
    click.echo(f"\nHTML report: {res.report_html.resolve()}")
    click.echo(f"done in {time.time() - started:.0f} s")


def _quiet_libraries() -> None:
    """The demo is read by people: keep transformers' per-load progress bars out of its output
    (ragtune's own bars for training and inference stay)."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a dependency of the demo anyway
        pass
