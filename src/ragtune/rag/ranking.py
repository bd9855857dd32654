"""Ranking over a score matrix and mean recall@k / MRR@k / NDCG@k over queries.

Not sentence-transformers' InformationRetrievalEvaluator: we already hold the vectors (queries
embedded with the query instruction, passages without), so ranking is one numpy product.
"""
from __future__ import annotations

from typing import Sequence

DEFAULT_KS = (1, 3, 5, 10)


def rank_metrics(ranked: Sequence[Sequence[int]], relevant: Sequence[set[int]],
                 ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean recall@k / MRR@k / NDCG@k over queries (``ranked[i]``: ids best first; ``relevant[i]``:
    its relevant ids), using the per-query metrics of :mod:`ragtune.eval.retrieval`."""
    from ..eval.retrieval import mrr_at_k, ndcg_at_k, recall_at_k

    if len(ranked) != len(relevant):
        raise ValueError(f"{len(ranked)} rankings for {len(relevant)} relevance sets")
    pairs = [(list(ids), rel) for ids, rel in zip(ranked, relevant) if rel]
    n = max(len(pairs), 1)
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = sum(recall_at_k(ids, rel, k) for ids, rel in pairs) / n
        out[f"mrr@{k}"] = sum(mrr_at_k(ids, rel, k) for ids, rel in pairs) / n
        out[f"ndcg@{k}"] = sum(ndcg_at_k(ids, rel, k) for ids, rel in pairs) / n
    return out


def top_k_ids(query_vecs, corpus_vecs, k: int):
    """Indices of the ``k`` most similar corpus rows per query (dot product; inputs normalized)."""
    import numpy as np

    scores = np.asarray(query_vecs, dtype=np.float32) @ np.asarray(corpus_vecs, dtype=np.float32).T
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(
        np.take_along_axis(scores, part, axis=1), order, axis=1)
