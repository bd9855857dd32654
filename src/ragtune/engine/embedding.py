"""Embedding engine: a sentence-transformers model behind ``/v1/embeddings``.

It embeds through :class:`~ragtune.models.embedder.SentenceTransformerEmbedder`, so a served query
gets the same vector as in retrieval eval and RAG (the tuned model's saved query instruction
applied to queries only) and every vector is L2-normalised."""
from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from .base import PromptTooLongError


class EmbeddingEngine:
    kind = "embedding"

    def __init__(self, model: Any, name: str = "embedder", batch_size: int = 32):
        from ..models.embedder import SentenceTransformerEmbedder

        self.model, self.name, self.batch_size = model, name, batch_size
        self._embedder = SentenceTransformerEmbedder(model, name=name, batch_size=batch_size, show_progress=False)
        self.max_len = int(getattr(model, "max_seq_length", 0) or 512)
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dimension = int(get_dim() or 0)
        self._lock = threading.Lock()
        self.calls = 0
        self.texts = 0

    @classmethod
    def load(cls, model: str, *, device: str | None = None, name: str | None = None, **kw: Any) -> "EmbeddingEngine":
        from ..models import resolve_model
        from ..models.loading import load_sentence_transformer

        resolved = resolve_model(model, kind="embedding")
        return cls(load_sentence_transformer(str(resolved.path), device=device), name=name or resolved.name, **kw)

    def embed(self, texts: Sequence[str], query: bool = False) -> tuple[list[list[float]], int]:
        """(vectors, prompt token count); ``query``: embed as search queries (the model's saved
        query instruction, sentence-transformers ``prompts["query"]``, is prepended), else as
        documents. A text longer than the model's max_seq_length is an error, not a silent
        truncation: the vector would describe only the start of the text."""
        counts = self._embedder.token_counts(texts, query=query)
        for i, n in enumerate(counts):
            if n > self.max_len:
                raise PromptTooLongError(f"input[{i}] has {n} tokens but this embedding model's limit is "
                                         f"{self.max_len} tokens", hint="split the text into chunks")
        with self._lock:
            encode = self._embedder.embed_queries if query else self._embedder.embed_documents
            vectors = encode(list(texts))
            self.calls += 1
            self.texts += len(texts)
        return [v.astype(float).tolist() for v in vectors], sum(counts)

    def stats(self) -> dict[str, Any]:
        return {"calls": self.calls, "texts": self.texts, "max_seq_length": self.max_len}

    def close(self) -> None:
        pass
