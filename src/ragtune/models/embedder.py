"""The one Embedder: training evaluation, retrieval eval, RAG, serving, metrics and
``TrainableModule`` all embed through this interface, so a query gets the same vector everywhere.

Queries and documents are embedded separately: a query instruction saved with a tuned model
(sentence-transformers ``prompts["query"]``, which ``ragtune finetune embed`` writes) is applied to
queries only, by sentence-transformers' own ``encode_query`` / ``encode_document``.

:func:`as_embedder` turns what users pass as ``embed=`` into an :class:`Embedder`: a model name /
local dir / tuned output dir / hub id, a loaded ``SentenceTransformer``, an object exposing a model
dir (``model_path``, e.g. a TrainableModule), or any callable mapping texts to vectors.
"""
from __future__ import annotations

import abc
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError


class Embedder(abc.ABC):
    """``embed_queries`` / ``embed_documents`` return L2-normalized float32 arrays, one row per text."""

    name: str = "embedder"

    def embed_queries(self, texts: Sequence[str], progress: bool = False):
        return self.embed_documents(texts, progress=progress)

    @abc.abstractmethod
    def embed_documents(self, texts: Sequence[str], progress: bool = False):
        """L2-normalized float32 array, one row per text."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """Stable across processes; changes whenever the vectors would (re-tuned weights, another model)."""

    # What the model reads of a text: None when unknown (a plain callable). Callers use it to say
    # how many texts are longer, whose tail would not affect the vector.
    max_seq_length: int | None = None

    def token_counts(self, texts: Sequence[str], query: bool = False) -> list[int] | None:
        """Tokens per text as the model sees it, or None when the embedder cannot tell."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


def normalize(vecs):
    """Rows scaled to unit length; a zero row stays zero (no NaN)."""
    import numpy as np

    vecs = np.asarray(vecs, dtype=np.float32)
    if vecs.ndim == 1:
        vecs = vecs[None, :]
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.where(norms == 0, 1.0, norms)


class SentenceTransformerEmbedder(Embedder):
    def __init__(self, model: Any, name: str | None = None, path: Path | None = None, batch_size: int = 64,
                 show_progress: bool | None = None):
        """``show_progress``: True always shows a progress bar, False never (a server), None (the
        default) for large inputs only."""
        self.model = model
        self.path = path
        self.name = name or (path.name if path else type(model).__name__)
        self.batch_size = batch_size
        self.show_progress = show_progress

    @classmethod
    def load(cls, ref: str | os.PathLike, *, device: str | None = None, **kw: Any) -> "SentenceTransformerEmbedder":
        from .loading import load_sentence_transformer
        from .registry import resolve_model

        resolved = resolve_model(ref, kind="embedding")
        return cls(load_sentence_transformer(str(resolved.path), device=device), name=resolved.name,
                   path=Path(resolved.path), **kw)

    @property
    def max_seq_length(self) -> int:   # type: ignore[override]
        return int(getattr(self.model, "max_seq_length", 0) or 512)

    @property
    def query_instruction(self) -> str:
        return (getattr(self.model, "prompts", None) or {}).get("query", "")

    def token_counts(self, texts: Sequence[str], query: bool = False) -> list[int]:
        """Tokens per text as the model sees it (the query instruction included for queries)."""
        prefix = self.query_instruction if query else ""
        return [len(ids) for ids in self.model.tokenizer([prefix + t for t in texts],
                                                         add_special_tokens=True)["input_ids"]]

    def _encode(self, texts: Sequence[str], query: bool, progress: bool):
        texts = list(texts)
        kwargs = dict(batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=True,
                      show_progress_bar=progress or (len(texts) > 8 * self.batch_size if self.show_progress is None
                                                     else self.show_progress))
        if hasattr(self.model, "encode_query"):  # sentence-transformers >= 5
            fn = self.model.encode_query if query else self.model.encode_document
            return normalize(fn(texts, **kwargs))
        prompts = getattr(self.model, "prompts", None) or {}
        return normalize(self.model.encode(texts, prompt=prompts.get("query" if query else "document", ""), **kwargs))

    def embed_queries(self, texts: Sequence[str], progress: bool = False):
        return self._encode(texts, True, progress)

    def embed_documents(self, texts: Sequence[str], progress: bool = False):
        return self._encode(texts, False, progress)

    def fingerprint(self) -> str:
        # Hash of the weights themselves: catches a model tuned in place as well as a new one.
        import torch

        h = hashlib.sha1()
        h.update(repr(sorted((getattr(self.model, "prompts", None) or {}).items())).encode())
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                h.update(name.encode())
                h.update(f"{float(p.float().sum()):.6e}/{float(p.float().abs().sum()):.6e}".encode())
        return h.hexdigest()


class LazyEmbedder(Embedder):
    """A :class:`SentenceTransformerEmbedder` by reference, loaded on first use (metrics build
    their embedder at configuration time, before anything should load)."""

    def __init__(self, ref: str | os.PathLike, *, batch_size: int = 64, device: str | None = None):
        self.ref, self.batch_size, self.device = os.fspath(ref), batch_size, device
        self.name = Path(self.ref).name
        self._loaded: SentenceTransformerEmbedder | None = None

    @property
    def loaded(self) -> SentenceTransformerEmbedder:
        if self._loaded is None:
            self._loaded = SentenceTransformerEmbedder.load(self.ref, device=self.device, batch_size=self.batch_size)
        return self._loaded

    def embed_queries(self, texts: Sequence[str], progress: bool = False):
        return self.loaded.embed_queries(texts, progress)

    def embed_documents(self, texts: Sequence[str], progress: bool = False):
        return self.loaded.embed_documents(texts, progress)

    def fingerprint(self) -> str:
        return self.loaded.fingerprint()

    @property
    def max_seq_length(self) -> int:   # type: ignore[override]
        return self.loaded.max_seq_length

    def token_counts(self, texts: Sequence[str], query: bool = False) -> list[int]:
        return self.loaded.token_counts(texts, query)


PROBE_TEXTS = ("ragtune fingerprint probe", "第二个探针句子。", "0123456789")


class CallableEmbedder(Embedder):
    """Any ``fn(list[str]) -> vectors`` (or ``fn(str) -> vector``)."""

    def __init__(self, fn: Callable, query_fn: Callable | None = None):
        self.fn, self.query_fn = fn, query_fn
        self.name = getattr(fn, "__name__", type(fn).__name__)
        self._fp: str | None = None

    @staticmethod
    def _call(fn, texts):
        texts = list(texts)
        try:
            out = fn(texts)
        except TypeError:
            out = [fn(t) for t in texts]
        vecs = normalize(out)
        if len(vecs) != len(texts):  # fn took only one string: call per text
            vecs = normalize([fn(t) for t in texts])
        return vecs

    def embed_documents(self, texts: Sequence[str], progress: bool = False):
        return self._call(self.fn, texts)

    def embed_queries(self, texts: Sequence[str], progress: bool = False):
        return self._call(self.query_fn or self.fn, texts)

    def fingerprint(self) -> str:
        """The function's own ``fingerprint`` when it has one; else a hash of its name and of the
        vectors it gives a few fixed probe texts: the same function gives the same fingerprint in
        every process (so a Milvus collection is reused, not duplicated), a changed one another."""
        custom = getattr(self.fn, "fingerprint", None)
        if custom:
            return str(custom() if callable(custom) else custom)
        if self._fp is None:
            import numpy as np

            h = hashlib.sha1(f"{getattr(self.fn, '__module__', '')}.{self.name}".encode())
            for fn in (self.fn, self.query_fn or self.fn):
                h.update(np.round(self._call(fn, PROBE_TEXTS), 5).tobytes())
            self._fp = h.hexdigest()
        return self._fp


def as_embedder(embed: Any) -> Embedder:
    if isinstance(embed, Embedder):
        return embed
    if isinstance(embed, (str, os.PathLike)):
        return SentenceTransformerEmbedder.load(embed)
    if type(embed).__name__ == "SentenceTransformer" or hasattr(embed, "encode_query"):
        return SentenceTransformerEmbedder(embed)
    own = getattr(embed, "embedder", None)   # TrainableModule: the Embedder it serves
    if isinstance(own, Embedder):
        return own
    model_path = getattr(embed, "model_path", None)  # tuned dir once trained, else base
    if isinstance(model_path, (str, os.PathLike)) and model_path:
        return SentenceTransformerEmbedder.load(model_path)
    if callable(embed):
        return CallableEmbedder(embed)
    raise ConfigError(f"cannot use {type(embed).__name__} as an embedding model",
                      hint="pass a model name or dir, a SentenceTransformer, or a callable texts -> vectors")
