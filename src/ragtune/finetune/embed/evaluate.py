"""Held-out retrieval evaluation of an embedder (before and after fine-tuning) and its report."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...core.io import atomic_open, atomic_write_text
from ...data.embed_sets import RetrievalItem, eval_corpus
from ...eval.retrieval import rank_metrics, top_k_ids


def evaluate_embedder(embedder, items: list[RetrievalItem], ks: Sequence[int],
                      pool: Sequence[str] = ()) -> dict[str, Any]:
    """recall@k / MRR@k / NDCG@k of ``embedder`` on ``items``; the corpus is ``pool`` (e.g. a BEIR
    corpus with its distractors) plus all the items' passages."""
    corpus, relevant = eval_corpus(items, pool)
    q = embedder.embed_queries([it.query for it in items])
    c = embedder.embed_documents(corpus)
    ids, _ = top_k_ids(q, c, max(ks))
    metrics = rank_metrics(ids.tolist(), relevant, ks)
    metrics.update(n_queries=len(items), n_corpus=len(corpus))
    return metrics


def comparison_markdown(base: dict, tuned: dict, ks: Sequence[int]) -> str:
    rows = ["| metric | base | tuned | delta |", "|---|---|---|---|"]
    for k in ks:
        for m in ("recall", "mrr", "ndcg"):
            key = f"{m}@{k}"
            rows.append(f"| {key} | {base[key]:.4f} | {tuned[key]:.4f} | {tuned[key] - base[key]:+.4f} |")
    rows.append(f"\n{base['n_queries']} held-out queries against {base['n_corpus']} passages.")
    return "\n".join(rows) + "\n"


def write_comparison_png(path: Path, base: dict, tuned: dict, ks: Sequence[int], loss: list[tuple[int, float]]) -> Path:
    from ...core.plotting import figure

    keys = [f"recall@{k}" for k in ks] + [f"mrr@{max(ks)}", f"ndcg@{max(ks)}"]
    fig, axes = figure(1, 2 if loss else 1, figsize=(11 if loss else 7, 4))
    ax = axes[0] if loss else axes
    x = range(len(keys))
    ax.bar([i - 0.2 for i in x], [base[k] for k in keys], width=0.4, label="base")
    ax.bar([i + 0.2 for i in x], [tuned[k] for k in keys], width=0.4, label="tuned")
    ax.set_xticks(list(x), keys, rotation=30)
    ax.set_ylim(0, 1)
    ax.set_title("held-out retrieval")
    ax.legend(loc="lower right")
    if loss:
        axes[1].plot([s for s, _ in loss], [v for _, v in loss])
        axes[1].set_xlabel("step")
        axes[1].set_title("training loss")
    fig.tight_layout()
    with atomic_open(path, "wb", encoding=None) as fh:
        fig.savefig(fh, format="png", dpi=100)
    return path


def write_reports(out: Path, base: dict, tuned: dict, ks: Sequence[int], loss) -> None:
    atomic_write_text(out / "metrics.md", "# Embedding fine-tune: base vs tuned\n\n" + comparison_markdown(base, tuned, ks))
    write_comparison_png(out / "metrics.png", base, tuned, ks, loss)
