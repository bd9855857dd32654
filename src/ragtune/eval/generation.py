"""Task metrics for generated answers (the chapter's three): exact, cosine, origin."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from ..core.config import Config
from ..core.log import get_logger
from .base import EvalItem, Metric, MetricResult, NoParams, register_metric
from .text import WordTokenizer, normalize_answer, split_words


class ExactParams(Config):
    lenient: bool = Field(False, description="Compare normalised text against every reference answer.")


class CosineParams(Config):
    embed: str = Field("all-MiniLM-L6-v2", description="Embedding model (name, dir or hub id).")
    batch_size: int = Field(32, ge=1, description="Embedding batch size.")
    device: str | None = Field(None, description="Embedding device (default: cuda if available).")
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


log = get_logger(__name__)

# Embedders trained on English only: their cosine on Chinese (or other CJK) text says little.
ENGLISH_EMBEDDERS = frozenset(m.lower() for m in (
    "all-MiniLM-L6-v2", "all-MiniLM-L12-v2", "all-mpnet-base-v2", "all-distilroberta-v1",
    "paraphrase-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2", "paraphrase-mpnet-base-v2",
    "multi-qa-MiniLM-L6-cos-v1", "multi-qa-mpnet-base-dot-v1", "msmarco-MiniLM-L6-cos-v5",
    "bge-small-en-v1.5", "bge-base-en-v1.5", "bge-large-en-v1.5", "e5-small-v2", "e5-base-v2", "e5-large-v2",
    "gte-small", "gte-base", "gte-large", "nomic-embed-text-v1.5"))
MULTILINGUAL_SUGGESTION = "BAAI/bge-m3 or sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"
CJK_SHARE = 0.3   # references whose non-space characters are at least this share CJK count as CJK


def cjk_share(texts: Sequence[str]) -> float:
    """Share of CJK characters (Han, kana, hangul, CJK punctuation) among the non-space characters."""
    chars = [c for t in texts for c in t if not c.isspace()]
    if not chars:
        return 0.0
    cjk = sum(1 for c in chars if "\u3000" <= c <= "\u30ff" or "\u3400" <= c <= "\u9fff"
              or "\uac00" <= c <= "\ud7af" or "\uf900" <= c <= "\ufaff" or "\uff00" <= c <= "\uffef")
    return cjk / len(chars)


def _card_languages(path: Path) -> list[str] | None:
    """``language:`` of a local model card (README.md front matter), or None when it has none."""
    try:
        text = (path / "README.md").read_text(encoding="utf-8")
    except OSError:
        return None
    if not text.startswith("---"):
        return None
    import yaml

    try:
        meta = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return None
    lang = meta.get("language") if isinstance(meta, dict) else None
    if isinstance(lang, str):
        return [lang.lower()]
    if isinstance(lang, list):
        return [str(x).lower() for x in lang]
    return None


def english_only_embedder(ref: str) -> bool:
    """True for an embedder known to be English-only: by name (a bundled/hub id or a folder named
    after one), by its local model card's ``language`` metadata, or by the base model a ragtune
    fine-tune of it names."""
    import json

    path = Path(ref).expanduser()
    if path.is_dir():
        langs = _card_languages(path)
        if langs is not None:
            return langs == ["en"]
        manifest = path / "ragtune_finetune.json"
        if manifest.exists():
            try:
                base = json.loads(manifest.read_text(encoding="utf-8")).get("base")
            except (OSError, json.JSONDecodeError):
                base = None
            if isinstance(base, str) and base != ref:
                return english_only_embedder(base)
    return ref.rstrip("/").split("/")[-1].lower() in ENGLISH_EMBEDDERS


@register_metric("cosine")
class CosineSimilarity(Metric):
    """Cosine similarity of prediction and reference embeddings, clamped to [0, 1] (the chapter's
    "semantic similarity"); an empty prediction scores 0 with a reason."""
    title = "Semantic similarity"
    Params = CosineParams
    embed: str
    batch_size: int
    device: str | None
    progress: bool

    def __init__(self, params: Any = None, *, embedder: Any = None, **values: Any):
        super().__init__(params, **values)
        from ..models.embedder import LazyEmbedder

        self._embedder = embedder or LazyEmbedder(self.embed, batch_size=self.batch_size, device=self.device)
        self.warnings: list[str] = []

    def check_language(self, references: Sequence[str]) -> None:
        """Warn once (log + :meth:`describe`, hence summary.json) when CJK references are scored with
        an English-only embedder: wrong answers then get a high "semantic similarity"."""
        if self.warnings:
            return
        share = cjk_share([r for r in references if r])
        if share >= CJK_SHARE and english_only_embedder(self.embed):
            msg = (f"cosine: {share:.0%} of the reference text is Chinese/Japanese/Korean but the embedder "
                   f"'{self.embed}' is English-only, so its similarities say little (wrong answers score "
                   f"high); use a multilingual embedder, e.g. {MULTILINGUAL_SUGGESTION} "
                   "(--embed / eval.embed; download it where a network is available)")
            log.warning("%s", msg)
            self.warnings.append(msg)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    def score_batch(self, items: Sequence[EvalItem]) -> list[MetricResult]:
        todo = [i for i, it in enumerate(items) if (it.prediction or "").strip() and (it.reference or "").strip()]
        results: list[MetricResult | None] = [None] * len(items)
        for i, it in enumerate(items):
            if not (it.prediction or "").strip():
                results[i] = MetricResult.ok(0.0, "empty prediction")
            elif not (it.reference or "").strip():
                results[i] = MetricResult.skipped("empty reference")
        if todo:
            self.check_language([items[i].reference for i in todo])
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
