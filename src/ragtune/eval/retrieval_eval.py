"""``ragtune eval retrieval``: retrieval quality of one or more embedders over an eval set and a KB.

For each embedder: the knowledge base is split into nodes (one per line by default), every eval
query retrieves its top nodes, and we score
- context recall / context relevance (ragtune.eval's non-LLM metrics) on the top ``topk`` nodes,
- recall@k / MRR@k / NDCG@k where a node is relevant when its text equals a reference passage.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..core.config import Config
from ..core.errors import DataError
from ..core.io import atomic_open, atomic_write_json, atomic_write_jsonl, atomic_write_text
from ..core.log import get_logger

log = get_logger(__name__)


class RetrievalEvalConfig(Config):
    evalset: str = Field(..., description="Eval file: {query, corpus:[reference passages]} per line.")
    kb: str = Field(..., description="Knowledge base: a file or a directory of .txt/.md/.json files.")
    embed: list[str] = Field(["all-MiniLM-L6-v2"], description="Embedder(s) to compare: names or dirs.")
    topk: int = Field(1, ge=1, description="Nodes given to context recall / relevance.")
    ks: list[int] = Field([1, 5, 10], description="k values for recall@k / MRR@k / NDCG@k.")
    splitter: Literal["line", "sentence", "none"] = Field("line", description="How the KB is split into nodes.")
    similarity: Literal["cosine", "bm25"] = Field("cosine", description="Retrieval scoring.")
    recall_threshold: float = Field(0.5, ge=0, le=1, description="Levenshtein similarity for a reference to count as recalled.")
    output: str | None = Field(None, description="Directory for retrieval.json/.md/.png and per-model retrieved contexts.")


def _ranked_metrics(ranked_texts: list[list[str]], references: list[list[str]], ks: list[int]) -> dict[str, float]:
    """recall@k / MRR@k / NDCG@k where a node is relevant when its text equals a reference passage."""
    from .retrieval import rank_metrics

    return rank_metrics([[t.strip() for t in texts] for texts in ranked_texts],
                        [{r.strip() for r in refs} for refs in references], ks)


def evaluate_one(embed: Any, items: list, cfg: RetrievalEvalConfig) -> tuple[dict[str, Any], list[dict]]:
    from ..rag.document import Document
    from ..rag.retriever import Retriever
    from .retrieval import context_recall, context_relevance

    doc = Document(cfg.kb, embed=embed if cfg.similarity == "cosine" else None)
    group = "__root__"
    if cfg.splitter != "none":
        doc.create_node_group("nodes", transform=cfg.splitter)
        group = "nodes"
    depth = max(cfg.topk, max(cfg.ks), 10)
    retriever = Retriever(doc, group, similarity=cfg.similarity, topk=depth)
    queries = [it.query for it in items]
    results = retriever.retrieve_many(queries)
    from .retrieval import mrr_at_k, ndcg_at_k, recall_at_k

    rows, recall, relevance, rel_n = [], 0.0, 0.0, 0
    for it, nodes in zip(items, results):
        top = [n.text for n in nodes[:cfg.topk]]
        item_recall = context_recall(top, it.corpus, threshold=cfg.recall_threshold) if top else 0.0
        recall += item_recall
        scores: dict[str, float | None] = {"context_recall": item_recall, "context_relevance": None}
        try:
            scores["context_relevance"] = context_relevance(top, it.corpus)
            relevance += scores["context_relevance"] or 0.0
            rel_n += 1
        except DataError:  # no retrieved sentence: undefined, skipped like ragtune.eval does
            pass
        ranked, refs = [x.text.strip() for x in nodes], {r.strip() for r in it.corpus}
        for k in cfg.ks:
            scores[f"recall@{k}"] = recall_at_k(ranked, refs, k)
        scores[f"mrr@{max(cfg.ks)}"] = mrr_at_k(ranked, refs, max(cfg.ks))
        scores[f"ndcg@{max(cfg.ks)}"] = ndcg_at_k(ranked, refs, max(cfg.ks))
        rows.append({"question": it.query, "context_retrieved": top, "context_reference": it.corpus,
                     "scores": [round(n.score or 0.0, 6) for n in nodes[:cfg.topk]], "metric_scores": scores})
    n = max(len(items), 1)
    metrics = {"context_recall": recall / n, "context_relevance": relevance / max(rel_n, 1),
               **_ranked_metrics([[x.text for x in nodes] for nodes in results], [it.corpus for it in items], cfg.ks),
               "n_queries": len(items), "n_nodes": len(doc.nodes(group))}
    return metrics, rows


def evaluate_retrieval(cfg: RetrievalEvalConfig | None = None, /, **kw: Any) -> dict[str, Any]:
    from ..data.embed_sets import load_eval

    cfg = cfg if cfg is not None else RetrievalEvalConfig.build(**kw)
    items = load_eval(cfg.evalset)
    embeds = cfg.embed if cfg.similarity == "cosine" else ["bm25"]
    report: dict[str, Any] = {"evalset": cfg.evalset, "kb": cfg.kb, "topk": cfg.topk, "models": []}
    per_model_rows: list[tuple[str, list[dict]]] = []
    for e in embeds:
        metrics, rows = evaluate_one(e, items, cfg)
        report["models"].append({"embed": e, "metrics": metrics})
        per_model_rows.append((e, rows))
        log.info("%s: context recall %.4f", e, metrics["context_recall"])
    if cfg.output:
        out = Path(cfg.output)
        atomic_write_json(out / "retrieval.json", report)
        cfg.save(out / "ragtune_config.yaml")
        atomic_write_text(out / "retrieval.md", report_markdown(report, cfg.ks))
        for i, (e, rows) in enumerate(per_model_rows):
            atomic_write_jsonl(out / f"retrieved_{i}_{Path(e).name}.jsonl", rows)
            write_eval_run(out / "runs" / f"{i}_{Path(e).name}", e, rows, cfg)
        _write_png(out / "retrieval.png", report, cfg.ks)
    return report


def write_eval_run(path: Path, embed: str, rows: list[dict], cfg: RetrievalEvalConfig) -> None:
    """The same run-directory schema as `ragtune eval llm`, so `ragtune eval compare out/runs/*` puts
    embedders side by side (the prediction of an item is its top retrieved passage)."""
    from ..core.io import new_run_id
    from .base import MetricResult, aggregate
    from .runs import write_run

    keys = _keys(cfg.ks)
    items = []
    per_metric: dict[str, list[MetricResult]] = {k: [] for k in keys}
    for i, row in enumerate(rows):
        scores = {}
        for k in keys:
            value = row["metric_scores"].get(k)
            result = (MetricResult.ok(value) if value is not None
                      else MetricResult.skipped("no retrieved sentence"))
            per_metric[k].append(result)
            scores[k] = result.to_dict()
        items.append({"index": i, "question": row["question"], "context": "", "reference": row["context_reference"][0],
                      "all_answers": row["context_reference"], "prediction": (row["context_retrieved"] or [""])[0],
                      "scores": scores})
    summary = {"run_id": new_run_id(), "name": Path(embed).name, "evalset": cfg.evalset, "predictions": cfg.kb,
               "n_items": len(items),
               "metrics": {k: {"name": k, "title": k, "kind": "continuous", "higher_is_better": True,
                               "params": {"topk": cfg.topk, "recall_threshold": cfg.recall_threshold},
                               **aggregate(per_metric[k]).to_dict()} for k in keys}}
    write_run(path, summary, items)


def _keys(ks) -> list[str]:
    return ["context_recall", "context_relevance", *[f"recall@{k}" for k in ks], f"mrr@{max(ks)}", f"ndcg@{max(ks)}"]


def report_markdown(report: dict[str, Any], ks) -> str:
    keys = _keys(ks)
    lines = [f"# Retrieval eval (topk={report['topk']} for context metrics)", "",
             "| embed | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for m in report["models"]:
        lines.append(f"| {m['embed']} | " + " | ".join(f"{100 * m['metrics'][k]:.2f}" for k in keys) + " |")
    lines.append(f"\n{report['models'][0]['metrics']['n_queries']} queries, "
                 f"{report['models'][0]['metrics']['n_nodes']} knowledge-base nodes; values in %.")
    return "\n".join(lines) + "\n"


def _write_png(path: Path, report: dict[str, Any], ks) -> None:
    from ..core.plotting import figure

    keys = _keys(ks)
    fig, ax = figure(figsize=(8, 4))
    width = 0.8 / max(len(report["models"]), 1)
    for j, m in enumerate(report["models"]):
        ax.bar([i + j * width for i in range(len(keys))], [m["metrics"][k] for k in keys], width=width,
               label=Path(m["embed"]).name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))], keys, rotation=30)
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_open(path, "wb", encoding=None) as fh:
        fig.savefig(fh, format="png", dpi=100)
