"""The embedding fine-tune methods: ``embedding`` (sentence-transformers) and ``flagembedding``."""
from __future__ import annotations

from typing import Any

from ..base import METHODS, FinetuneMethod, FinetuneResult
from .config import EmbedFinetuneConfig


class EmbeddingMethod(FinetuneMethod):
    name = "embedding"
    kind = "embedding"
    config_cls = EmbedFinetuneConfig
    description = "contrastive fine-tune of a sentence-transformers model (in-batch + hard negatives)"

    def train(self, cfg: Any) -> FinetuneResult:
        from .train import finetune_embedding

        return finetune_embedding(cfg)


class FlagEmbeddingMethod(EmbeddingMethod):
    name = "flagembedding"
    description = "BAAI FlagEmbedding's trainer under torchrun (optional extra), same config"


embedding = METHODS.register("embedding", EmbeddingMethod())
flagembedding = METHODS.register("flagembedding", FlagEmbeddingMethod())
