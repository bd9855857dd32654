"""Retrieval metrics: non-LLM context recall / relevance and IR metrics over ranked ids.

The plain functions return a float and raise :class:`DataError` when the score is undefined
(no references, no relevant ids); the registered metric classes wrap them per :class:`EvalItem`
and turn undefined cases into ``skipped`` results with a reason.
"""
from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from ..core.config import Config
from ..core.errors import DataError
from .base import EvalItem, Metric, MetricResult, register_metric
from .text import split_sentences


def levenshtein_similarity(a: str, b: str) -> float:
    """Normalised Levenshtein similarity in [0, 1] (1 - distance / max(len)); via rapidfuzz."""
    from rapidfuzz.distance import Levenshtein

    return float(Levenshtein.normalized_similarity(a, b))


def recalled_references(retrieved: Sequence[str], references: Sequence[str], threshold: float = 0.5) -> list[bool]:
    """For each reference: does some retrieved chunk have similarity > ``threshold`` with it?"""
    return [any(levenshtein_similarity(chunk, ref) > threshold for chunk in retrieved) for ref in references]


def context_recall(retrieved: Sequence[str], references: Sequence[str], *, threshold: float = 0.5,
                   mode: Literal["binary", "fractional"] = "fractional") -> float:
    """Non-LLM context recall. A reference context counts as recalled when some retrieved chunk's
    normalised Levenshtein similarity with it exceeds ``threshold``.
    ``fractional``: recalled references / all references. ``binary``: 1.0 only when every
    reference is recalled, else 0.0."""
    if not references:
        raise DataError("context_recall needs at least one reference context", field="reference_contexts")
    hits = recalled_references(retrieved, references, threshold)
    if mode == "binary":
        return 1.0 if all(hits) else 0.0
    if mode == "fractional":
        return sum(hits) / len(hits)
    raise DataError(f"unknown context_recall mode '{mode}'; valid: binary, fractional")


def context_relevance(retrieved: Sequence[str], references: Sequence[str], *,
                      lang: Literal["auto", "zh", "en"] = "auto") -> float:
    """Share of the retrieved chunks' sentences that occur verbatim in some reference context.
    Sentences come from ``split_sentences`` (Chinese 。！？； or English .!? splitter)."""
    sentences = [s for chunk in retrieved for s in split_sentences(chunk, lang)]
    if not sentences:
        raise DataError("context_relevance needs at least one retrieved sentence", field="retrieved")
    return sum(any(s in ref for ref in references) for s in sentences) / len(sentences)


def _check_k(k: int) -> None:
    if k < 1:
        raise DataError(f"k must be >= 1, got {k}")


def recall_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable] | Mapping[Hashable, float], k: int) -> float:
    """|relevant in top-k| / |relevant|."""
    _check_k(k)
    rel = {r for r in relevant if not isinstance(relevant, Mapping) or relevant[r] > 0}
    if not rel:
        raise DataError("recall@k needs at least one relevant id", field="relevant")
    return len(rel & set(ranked[:k])) / len(rel)


def mrr_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable] | Mapping[Hashable, float], k: int) -> float:
    """1 / rank of the first relevant id within the top-k (0 when none)."""
    _check_k(k)
    rel = {r for r in relevant if not isinstance(relevant, Mapping) or relevant[r] > 0}
    if not rel:
        raise DataError("MRR@k needs at least one relevant id", field="relevant")
    for rank, doc in enumerate(ranked[:k], start=1):
        if doc in rel:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable] | Mapping[Hashable, float], k: int) -> float:
    """NDCG@k with linear gains: DCG = sum(gain_i / log2(i + 1)), i = 1-based rank; normalised by
    the DCG of the ideal ranking. ``relevant``: ids (gain 1) or a mapping id -> graded gain."""
    _check_k(k)
    gains = dict(relevant) if isinstance(relevant, Mapping) else {r: 1.0 for r in relevant}
    gains = {d: float(g) for d, g in gains.items() if g > 0}
    if not gains:
        raise DataError("NDCG@k needs at least one relevant id", field="relevant")
    dcg = sum(gains.get(doc, 0.0) / math.log2(i + 1) for i, doc in enumerate(ranked[:k], start=1))
    ideal = sorted(gains.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 1) for i, g in enumerate(ideal, start=1))
    return dcg / idcg


class ContextRecallParams(Config):
    threshold: float = Field(0.5, ge=0, le=1, description="Levenshtein similarity above which a reference counts as recalled.")
    mode: Literal["binary", "fractional"] = Field("fractional", description="fractional: share of references recalled; binary: all or nothing.")


class ContextRelevanceParams(Config):
    lang: Literal["auto", "zh", "en"] = Field("auto", description="Sentence splitter language.")


@register_metric("context_recall")
class ContextRecall(Metric):
    """Share of the reference contexts that some retrieved chunk matches (rapidfuzz similarity above
    ``threshold``; ``binary``: 1 only when all are recalled)."""

    title = "Context recall"
    needs = ("retrieved", "reference_contexts")
    Params = ContextRecallParams
    threshold: float
    mode: Literal["binary", "fractional"]

    def score(self, item: EvalItem) -> MetricResult:
        refs = item.reference_contexts or ([item.context] if item.context else [])
        if not refs:
            return MetricResult.skipped("no reference context")
        if not item.retrieved:
            return MetricResult.ok(0.0, "nothing retrieved")
        hits = recalled_references(item.retrieved, refs, self.threshold)
        value = context_recall(item.retrieved, refs, threshold=self.threshold, mode=self.mode)
        return MetricResult.ok(value, None if all(hits) else f"{hits.count(False)}/{len(hits)} references not recalled")


@register_metric("context_relevance")
class ContextRelevance(Metric):
    """Share of the retrieved chunks' sentences that occur verbatim in some reference context."""

    title = "Context relevance"
    needs = ("retrieved", "reference_contexts")
    Params = ContextRelevanceParams
    lang: Literal["auto", "zh", "en"]

    def score(self, item: EvalItem) -> MetricResult:
        refs = item.reference_contexts or ([item.context] if item.context else [])
        if not refs:
            return MetricResult.skipped("no reference context")
        if not any(split_sentences(c, self.lang) for c in item.retrieved):
            return MetricResult.skipped("no retrieved sentences")
        return MetricResult.ok(context_relevance(item.retrieved, refs, lang=self.lang))


DEFAULT_KS = (1, 3, 5, 10)


def rank_metrics(ranked: Sequence[Sequence[Hashable]], relevant: Sequence[Any],
                 ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean recall@k / MRR@k / NDCG@k over queries: the one aggregator of every retrieval eval.

    ``ranked[i]``: ids (or passage texts) best first; ``relevant[i]``: the relevant ones. Every query
    counts in the mean: a relevant passage that is not in the ranking (e.g. missing from the
    knowledge base) counts as missed, and a query with no relevant passage at all is an error
    naming it, never silently dropped (that would change the mean without saying so)."""
    if len(ranked) != len(relevant):
        raise DataError(f"{len(ranked)} rankings for {len(relevant)} relevance sets")
    for i, rel in enumerate(relevant):
        if not rel:
            raise DataError("query has no relevant passage", record=i, field="corpus")
    n = max(len(ranked), 1)
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = sum((recall_at_k(list(ids), rel, k) for ids, rel in zip(ranked, relevant)), 0.0) / n
        out[f"mrr@{k}"] = sum((mrr_at_k(list(ids), rel, k) for ids, rel in zip(ranked, relevant)), 0.0) / n
        out[f"ndcg@{k}"] = sum((ndcg_at_k(list(ids), rel, k) for ids, rel in zip(ranked, relevant)), 0.0) / n
    return out


def top_k_ids(query_vecs, corpus_vecs, k: int):
    """(indices, scores) of the ``k`` most similar corpus rows per query (dot product of normalized
    vectors). Not sentence-transformers' InformationRetrievalEvaluator: the vectors are already
    here (queries with their instruction, passages without), so ranking is one numpy product."""
    import numpy as np

    scores = np.asarray(query_vecs, dtype=np.float32) @ np.asarray(corpus_vecs, dtype=np.float32).T
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(
        np.take_along_axis(scores, part, axis=1), order, axis=1)
