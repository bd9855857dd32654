"""Turn whatever the user passes as ``embed=`` into one small interface.

Accepted: a model name / local dir / fine-tune output dir / HF id (str or Path), a loaded
``SentenceTransformer``, an object exposing a model dir (``target_path``/``path``, e.g. a
TrainableModule), or any callable mapping a list of texts to vectors. Queries and documents are
embedded separately so a query instruction saved with a tuned model (sentence-transformers
``prompts["query"]``) is applied to queries only.
"""
from __future__ import annotations

import abc
import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from ..core.errors import ConfigError


class Embedder(abc.ABC):
    """Base: ``embed_queries`` / ``embed_documents`` return L2-normalized float32 arrays."""

    name: str = "embedder"

    def embed_queries(self, texts: Sequence[str]):
        return self.embed_documents(texts)

    @abc.abstractmethod
    def embed_documents(self, texts: Sequence[str]):
        """L2-normalized float32 array, one row per text."""

    def fingerprint(self) -> str:
        """Changes whenever the vectors would change (re-tuned weights, another model)."""
        return f"{type(self).__name__}:{id(self)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


def _normalize(vecs):
    import numpy as np

    vecs = np.asarray(vecs, dtype=np.float32)
    if vecs.ndim == 1:
        vecs = vecs[None, :]
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.where(norms == 0, 1.0, norms)


class SentenceTransformerEmbedder(Embedder):
    def __init__(self, model: Any, name: str | None = None, path: Path | None = None, batch_size: int = 64,
                 show_progress: bool = False):
        self.model = model
        self.path = path
        self.name = name or (path.name if path else type(model).__name__)
        self.batch_size = batch_size
        self.show_progress = show_progress

    @classmethod
    def load(cls, ref: str | os.PathLike, **kw) -> "SentenceTransformerEmbedder":
        from sentence_transformers import SentenceTransformer

        from . import resolve_model

        resolved = resolve_model(ref, kind="embedding")
        model = SentenceTransformer(str(resolved.path), device="cpu" if not _cuda() else None,
                                    local_files_only=True)
        return cls(model, name=resolved.name, path=Path(resolved.path), **kw)

    def _encode(self, texts, query: bool):
        texts = list(texts)
        kwargs = dict(batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=True,
                      show_progress_bar=self.show_progress or len(texts) > 8 * self.batch_size)
        if hasattr(self.model, "encode_query"):  # sentence-transformers >= 5
            fn = self.model.encode_query if query else self.model.encode_document
            return _normalize(fn(list(texts), **kwargs))
        prompts = getattr(self.model, "prompts", None) or {}
        name = "query" if query else "document"
        return _normalize(self.model.encode(list(texts), prompt=prompts.get(name, ""), **kwargs))

    def embed_queries(self, texts):
        return self._encode(texts, True)

    def embed_documents(self, texts):
        return self._encode(texts, False)

    def fingerprint(self) -> str:
        # Hash of the weights themselves: catches a model tuned in place as well as a new one.
        import torch

        h = hashlib.sha1()
        h.update(repr(sorted(self.model.prompts.items())).encode())
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                h.update(name.encode())
                h.update(f"{float(p.float().sum()):.6e}/{float(p.float().abs().sum()):.6e}".encode())
        return h.hexdigest()


class CallableEmbedder(Embedder):
    """Any ``fn(list[str]) -> vectors`` (or ``fn(str) -> vector``)."""

    def __init__(self, fn: Callable, query_fn: Callable | None = None):
        self.fn, self.query_fn = fn, query_fn
        self.name = getattr(fn, "__name__", type(fn).__name__)

    @staticmethod
    def _call(fn, texts):
        texts = list(texts)
        try:
            out = fn(texts)
        except TypeError:
            out = [fn(t) for t in texts]
        vecs = _normalize(out)
        if len(vecs) != len(texts):  # fn took only one string: call per text
            vecs = _normalize([fn(t) for t in texts])
        return vecs

    def embed_documents(self, texts):
        return self._call(self.fn, texts)

    def embed_queries(self, texts):
        return self._call(self.query_fn or self.fn, texts)

    def fingerprint(self) -> str:
        custom = getattr(self.fn, "fingerprint", None)
        return str(custom() if callable(custom) else custom) if custom else f"callable:{id(self.fn)}"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def as_embedder(embed: Any) -> Embedder:
    if isinstance(embed, Embedder):
        return embed
    if isinstance(embed, (str, os.PathLike)):
        return SentenceTransformerEmbedder.load(embed)
    if type(embed).__name__ == "SentenceTransformer" or hasattr(embed, "encode_query"):
        return SentenceTransformerEmbedder(embed)
    model_path = getattr(embed, "model_path", None)  # TrainableModule: tuned dir once trained, else base
    if isinstance(model_path, (str, os.PathLike)) and model_path:
        return SentenceTransformerEmbedder.load(model_path)
    for attr in ("target_path", "path"):
        value = getattr(embed, attr, None)
        if isinstance(value, (str, os.PathLike)) and value and Path(value).exists():
            return SentenceTransformerEmbedder.load(value)
    if callable(embed):
        return CallableEmbedder(embed)
    raise ConfigError(f"cannot use {type(embed).__name__} as an embedding model",
                      hint="pass a model name or dir, a SentenceTransformer, or a callable texts -> vectors")
