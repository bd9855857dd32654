"""Embedding fine-tuning: ``rt.finetune.embedding`` (sentence-transformers) and
``rt.finetune.flagembedding`` (BAAI FlagEmbedding under torchrun), one config for both.

    import ragtune as rt
    res = rt.finetune.embedding(base="all-MiniLM-L6-v2", train="train.jsonl", output="tuned-embed",
                                num_train_epochs=1, per_device_train_batch_size=32)
    res.base["recall@1"], res.tuned["recall@1"]   # also in tuned-embed/metrics.json
"""
from __future__ import annotations

from typing import Any

from .config import EmbedFinetuneConfig
from .train import EmbedFinetuneResult, finetune_embedding


class EmbedFinetuneMethod:
    """A named fine-tune method for embedders; calling it runs a fine-tune with that backend."""

    kind = "embedding"
    config_cls = EmbedFinetuneConfig

    def __init__(self, name: str, backend: str):
        self.name, self.backend = name, backend

    def config(self, **kw: Any) -> EmbedFinetuneConfig:
        kw.setdefault("backend", self.backend)
        return EmbedFinetuneConfig.build(**kw)

    def __call__(self, **kw: Any) -> EmbedFinetuneResult:
        return finetune_embedding(self.config(**kw))

    def __repr__(self) -> str:
        return f"<finetune method {self.name} (backend={self.backend})>"


embedding = EmbedFinetuneMethod("embedding", "sentence_transformers")
flagembedding = EmbedFinetuneMethod("flagembedding", "flagembedding")
METHODS = {m.name: m for m in (embedding, flagembedding)}

__all__ = ["EmbedFinetuneConfig", "EmbedFinetuneMethod", "EmbedFinetuneResult", "METHODS",
           "embedding", "finetune_embedding", "flagembedding"]
