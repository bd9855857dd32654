"""Embedding engine: a sentence-transformers model behind ``/v1/embeddings``."""
from __future__ import annotations

import threading
from typing import Any, Sequence

from .base import PromptTooLongError


class EmbeddingEngine:
    kind = "embedding"

    def __init__(self, model: Any, name: str = "embedder", batch_size: int = 32):
        self.model, self.name, self.batch_size = model, name, batch_size
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

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        """(vectors, prompt token count). A text longer than the model's max_seq_length is an error,
        not a silent truncation: the vector would describe only the start of the text."""
        counts = [len(ids) for ids in self.model.tokenizer(list(texts), add_special_tokens=True)["input_ids"]]
        for i, n in enumerate(counts):
            if n > self.max_len:
                raise PromptTooLongError(f"input[{i}] has {n} tokens but this embedding model's limit is "
                                         f"{self.max_len} tokens", hint="split the text into chunks")
        with self._lock:
            vectors = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                        show_progress_bar=False)
            self.calls += 1
            self.texts += len(texts)
        return [v.astype(float).tolist() for v in vectors], sum(counts)

    def stats(self) -> dict[str, Any]:
        return {"calls": self.calls, "texts": self.texts, "max_seq_length": self.max_len}

    def close(self) -> None:
        pass
