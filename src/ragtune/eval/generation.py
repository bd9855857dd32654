"""Task metrics for generated answers (the chapter's three): exact, cosine, origin."""
from __future__ import annotations

from typing import Any, Sequence

from .base import EvalItem, Metric, MetricResult, register_metric
from .text import WordTokenizer, normalize_answer, split_words


@register_metric("exact")
class ExactMatch(Metric):
    """1 when the stripped prediction equals the stripped reference, else 0.

    ``lenient=True``: 1 when the normalised prediction (see ``normalize_answer``: case, whitespace,
    ASCII + Chinese punctuation, full-width forms) equals the normalised reference or any of
    ``all_answers``.
    """
    name = "exact"
    title = "Exact match"

    def __init__(self, lenient: bool = False):
        self.lenient = lenient

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
    name = "exact_lenient"
    title = "Exact match (lenient)"

    def __init__(self):
        super().__init__(lenient=True)


def clamped_cosine(x: Sequence[float], y: Sequence[float]) -> float:
    """Cosine of two vectors clamped to [0, 1]; a zero vector gives 0 (not NaN)."""
    import numpy as np

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    norm = float(np.linalg.norm(x) * np.linalg.norm(y))
    if norm == 0.0:
        return 0.0
    return float(min(1.0, max(0.0, float(np.dot(x, y)) / norm)))


class Embedder:
    """A sentence-transformers model resolved through ``ragtune.models.resolve_model``, loaded once
    on first use; ``encode`` is batched. Shared by ``cosine`` and ``answer_relevance``."""

    def __init__(self, model: str = "all-MiniLM-L6-v2", batch_size: int = 32, device: str | None = None):
        self.model = model
        self.batch_size = batch_size
        self.device = device
        self._st = None

    def _load(self):
        if self._st is None:
            from sentence_transformers import SentenceTransformer

            from ..models.device import default_device
            from ..models import resolve_model

            resolved = resolve_model(self.model, "embed")
            self._st = SentenceTransformer(str(resolved.path), device=self.device or default_device())
        return self._st

    def encode(self, texts: Sequence[str], progress: bool = False):
        # Raw (unnormalised) embeddings: the cosine itself divides by the norms, and a zero vector
        # must stay detectable instead of becoming NaN.
        return self._load().encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                   normalize_embeddings=False, show_progress_bar=progress)


@register_metric("cosine")
class CosineSimilarity(Metric):
    """Cosine similarity of prediction and reference embeddings, clamped to [0, 1] (the chapter's
    "semantic similarity"); an empty prediction scores 0 with a reason."""
    name = "cosine"
    title = "Semantic similarity"

    def __init__(self, embed: str = "all-MiniLM-L6-v2", batch_size: int = 32, device: str | None = None,
                 progress: bool = False):
        self.embed = embed
        self.batch_size = batch_size
        self.progress = progress
        self._embedder = Embedder(embed, batch_size, device)

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
            vecs = self._embedder.encode(texts, progress=self.progress)
            for k, i in enumerate(todo):
                value = clamped_cosine(vecs[k], vecs[len(todo) + k])
                results[i] = MetricResult.ok(round(value, 6))
        return results  # type: ignore[return-value]

    def score(self, item: EvalItem) -> MetricResult:
        return self.score_batch([item])[0]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "embed": self.embed, "batch_size": self.batch_size}


@register_metric("origin")
class OriginScore(Metric):
    """1 when every word of the prediction occurs in the context (the chapter's "original text
    inclusion"), else 0 with the missing words as reason. Words come from ``split_words`` with the
    configured tokenizer (``auto`` = jieba for CJK text, whitespace otherwise)."""
    name = "origin"
    title = "Origin (in context)"
    needs = ("prediction", "context")

    def __init__(self, tokenizer: WordTokenizer = "auto"):
        self.tokenizer = tokenizer

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
