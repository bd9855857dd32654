"""`ragtune eval retrieval --evalset eval.jsonl --kb DIR --embed M [--embed M2 ...]`."""
from __future__ import annotations

import click

from ..core.config import config_options
from ..eval.retrieval_eval import RetrievalEvalConfig


@click.command("retrieval")
@click.option("--embed", "embed", multiple=True, help="Embedder to evaluate; repeat to compare (base vs tuned).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML file with any of the keys below.")
@config_options(RetrievalEvalConfig, exclude=("embed",))
def retrieval(config_path, embed, **values) -> None:
    """Context recall / relevance and recall@k / MRR / NDCG of embedders over an eval set + knowledge base."""
    from ..eval.retrieval_eval import evaluate_retrieval, report_markdown

    if embed:
        values["embed"] = list(embed)
    cfg = RetrievalEvalConfig.from_sources(config_path, **values)
    report = evaluate_retrieval(cfg)
    click.echo(report_markdown(report, cfg.ks))
