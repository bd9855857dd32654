"""Task metrics for generated answers (the chapter's three): exact, cosine, origin."""
from __future__ import annotations

from typing import Any, ClassVar, Optional, Sequence

from pydantic import Field

from ..core.config import Config
from .base import EvalItem, Metric, MetricResult, NoParams, register_metric
from .text import WordTokenizer, normalize_answer, split_words


class ExactParams(Config):
    lenient: bool = Field(False, description="Compare normalised text against every reference answer.")


class CosineParams(Config):
    embed: str = Field("all-MiniLM-L6-v2", description="Embedding model (name, dir or hub id).")
    batch_size: int = Field(32, ge=1, description="Embedding batch size.")
    device: Optional[str] = Field(None, description="Embedding device (default: cuda if available).")
    progress: bool = Field(False, description="Show a progress bar while embedding.")


class OriginParams(Config):
    tokenizer: WordTokenizer = Field("auto", description="Word splitter: auto (jieba for CJK), jieba, char, whitespace.")


@register_metric("exact")
class ExactMatch(Metric):
    """1 when the stripped prediction equals the stripped reference, else 0.

    ``lenient=True``: 1 when the normalised prediction (see ``normalize_answer``: case, whitespace,
    ASCII + Chinese punctuation, full-width forms) equals the normalised reference or any of
    ``all_answers``.
    """
    title = "Exact match"
    kind = "binary"
    Params: ClassVar[type[Config]] = ExactParams
    lenient: bool

    def score(self, item: EvalItem) -> MetricResult:
        pred = (item.prediction or "").strip()
        if not pred:
            return MetricResult.ok(0.0, "empty prediction")
        if not self.lenient:
            return MetricResult.ok(1.0 if pred == (item.reference or "").strip() else 0.0)
        golds = [g for g in [item.reference, *item.all_answers] if g and g.strip()]
        norm = normalize_answer(pred)
        hit = next((g for g in golds if normalize_answer(g) == norm), None)
        return MetricResult.ok(1.0, f"matches {hit!r}") if hit is not None else MetricResult.ok(0.0)


@register_metric("exact_lenient")
class LenientExactMatch(ExactMatch):
    """``exact`` in lenient mode, registered on its own so both modes can be reported side by side."""
    title = "Exact match (lenient)"
    Params: ClassVar[type[Config]] = NoParams

    def __init__(self, params: Any = None, **values: Any):
        super().__init__(params, **values)
        self.lenient = True


def clamped_cosine(x: Sequence[float], y: Sequence[float]) -> float:
    """Cosine of two vectors clamped to [0, 1]; a zero vector gives 0 (not NaN)."""
    import numpy as np

    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0.0:
        return 0.0
    return float(min(1.0, max(0.0, float(np.dot(a, b)) / norm)))


@register_metric("cosine")
class CosineSimilarity(Metric):
    """Cosine similarity of prediction and reference embeddings, clamped to [0, 1] (the chapter's
    "semantic similarity"); an empty prediction scores 0 with a reason."""
    title = "Semantic similarity"
    Params = CosineParams
    embed: str
    batch_size: int
    device: Optional[str]
    progress: bool

    def __init__(self, params: Any = None, *, embedder: Any = None, **values: Any):
        super().__init__(params, **values)
        from ..models.embedder import LazyEmbedder

        self._embedder = embedder or LazyEmbedder(self.embed, batch_size=self.batch_size, device=self.device)

    def score_batch(self, items: Sequence[EvalItem]) -> list[MetricResult]:
        todo = [i for i, it in enumerate(items) if (it.prediction or "").strip() and (it.reference or "").strip()]
        results: list[MetricResult | None] = [None] * len(items)
        for i, it in enumerate(items):
            if not (it.prediction or "").strip():
                results[i] = MetricResult.ok(0.0, "empty prediction")
            elif not (it.reference or "").strip():
                results[i] = MetricResult.skipped("empty reference")
        if todo:
            # One batched encode over predictions + references (sentence-transformers sorts by length).
            texts = [items[i].prediction.strip() for i in todo] + [items[i].reference.strip() for i in todo]
            vecs = self._embedder.embed_documents(texts, progress=self.progress)
            for k, i in enumerate(todo):
                value = clamped_cosine(vecs[k], vecs[len(todo) + k])
                results[i] = MetricResult.ok(round(value, 6))
        return results  # type: ignore[return-value]

    def score(self, item: EvalItem) -> MetricResult:
        return self.score_batch([item])[0]


@register_metric("origin")
class OriginScore(Metric):
    """1 when every word of the prediction occurs in the context (the chapter's "original text
    inclusion"), else 0 with the missing words as reason. Words come from ``split_words`` with the
    configured tokenizer (``auto`` = jieba for CJK text, whitespace otherwise)."""
    title = "Origin (in context)"
    kind = "binary"
    needs = ("prediction", "context")
    Params = OriginParams
    tokenizer: WordTokenizer

    def score(self, item: EvalItem) -> MetricResult:
        if not (item.prediction or "").strip():
            return MetricResult.ok(0.0, "empty prediction")
        words = split_words(item.prediction, self.tokenizer)
        if not words:
            return MetricResult.ok(0.0, "prediction has no words (only punctuation/whitespace)")
        context = item.context or ""
        missing = [w for w in words if w not in context]
        if missing:
            shown = ", ".join(repr(w) for w in dict.fromkeys(missing[:10]))
            return MetricResult.ok(0.0, f"{len(missing)}/{len(words)} words not in context: {shown}")
        return MetricResult.ok(1.0)
