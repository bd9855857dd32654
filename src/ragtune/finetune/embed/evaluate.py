"""Held-out retrieval evaluation of an embedder (before and after fine-tuning) and its report."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...core.io import atomic_open, atomic_write_text
from ...data.embed_sets import RetrievalItem, eval_corpus
from ...eval.retrieval import context_recall, context_relevance, rank_metrics, top_k_ids

# What MTEB and FlagEmbedding users compare first, then the chapter's context metrics (top 1).
LEAD_METRICS = ("ndcg@10", "recall@1", "recall@5", "recall@100", "context_recall@1", "context_relevance@1")


def evaluate_embedder(embedder, items: list[RetrievalItem], ks: Sequence[int],
                      distractors: Sequence[str] = ()) -> dict[str, Any]:
    """recall@k / MRR@k / NDCG@k and the chapter's context recall / relevance (top 1, Levenshtein
    match as ``ragtune eval retrieval``) of ``embedder`` on ``items``. The corpus is the items'
    passages plus ``distractors`` (other passages, e.g. the training ones: a realistic pool)."""
    corpus, relevant = eval_corpus(items, distractors)
    q = embedder.embed_queries([it.query for it in items])
    c = embedder.embed_documents(corpus)
    ids, _ = top_k_ids(q, c, max(ks))
    metrics: dict[str, Any] = rank_metrics(ids.tolist(), relevant, ks)
    top1 = [[corpus[row[0]]] for row in ids.tolist()]
    n = max(1, len(items))
    metrics["context_recall@1"] = sum(context_recall(t, it.corpus) for t, it in zip(top1, items)) / n
    metrics["context_relevance@1"] = sum(context_relevance(t, it.corpus) for t, it in zip(top1, items)) / n
    n_relevant = len(set().union(*relevant)) if relevant else 0
    metrics.update(n_queries=len(items), n_corpus=len(corpus), n_distractors=len(corpus) - n_relevant)
    return metrics


def regressions(base: dict, tuned: dict, keys: Sequence[str]) -> list[str]:
    """The metrics on which the tuned model scores below its base (reported, never silent)."""
    return [k for k in keys if k in base and k in tuned and tuned[k] < base[k]]


def _order(keys: Sequence[str]) -> list[str]:
    lead = [k for k in LEAD_METRICS if k in keys]
    return lead + [k for k in keys if k not in lead]


def comparison_markdown(base: dict, tuned: dict, ks: Sequence[int]) -> str:
    keys = [f"{m}@{k}" for k in ks for m in ("recall", "mrr", "ndcg")] + ["context_recall@1", "context_relevance@1"]
    keys = _order([k for k in keys if k in base and k in tuned])
    rows = ["| metric | base | tuned | delta |", "|---|---|---|---|"]
    for key in keys:
        rows.append(f"| {key} | {base[key]:.4f} | {tuned[key]:.4f} | {tuned[key] - base[key]:+.4f} |")
    rows.append(f"\n{base['n_queries']} held-out queries against {base['n_corpus']} passages "
                f"({base.get('n_distractors', 0)} of them relevant to no held-out query).")
    worse = regressions(base, tuned, keys)
    if worse:
        rows.append(f"\n**The tuned model is below its base on: {', '.join(worse)}.**")
    return "\n".join(rows) + "\n"


def write_comparison_png(path: Path, base: dict, tuned: dict, ks: Sequence[int], loss: list[tuple[int, float]]) -> Path:
    from ...core.plotting import figure

    keys = [f"recall@{k}" for k in ks] + ["ndcg@10" if "ndcg@10" in base else f"ndcg@{max(ks)}"]
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
