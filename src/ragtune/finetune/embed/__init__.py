"""Embedding fine-tuning: ``rt.finetune.embedding`` (sentence-transformers) and
``rt.finetune.flagembedding`` (BAAI FlagEmbedding under torchrun), one config for both.

    import ragtune as rt
    res = rt.finetune.embedding.config(base="all-MiniLM-L6-v2", train="train.jsonl", output="tuned-embed",
                                       num_train_epochs=1).execute()
    res.metrics["base"]["recall@1"], res.metrics["tuned"]["recall@1"]   # also in tuned-embed/metrics.json
"""
from __future__ import annotations

from .config import EmbedFinetuneConfig
from .methods import EmbeddingMethod, FlagEmbeddingMethod, embedding, flagembedding
from .train import finetune_embedding

__all__ = ["EmbedFinetuneConfig", "EmbeddingMethod", "FlagEmbeddingMethod", "embedding", "finetune_embedding",
           "flagembedding"]
