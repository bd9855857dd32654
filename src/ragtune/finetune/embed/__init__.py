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

    def run(self, base: str | None = None, train: str | None = None, output: str | None = None,
            **kw: Any) -> EmbedFinetuneResult:
        # base_model / output_dir: the LLM methods' names, accepted so callers can treat methods alike
        base = base or kw.pop("base_model", None)
        output = output or kw.pop("output_dir", None)
        given = {k: v for k, v in (("base", base), ("train", train), ("output", output)) if v is not None}
        return finetune_embedding(self.config(**given, **kw))

    def run_config(self, cfg: EmbedFinetuneConfig) -> EmbedFinetuneResult:
        return finetune_embedding(cfg)

    __call__ = run

    def __repr__(self) -> str:
        return f"<finetune method {self.name} (backend={self.backend})>"


embedding = EmbedFinetuneMethod("embedding", "sentence_transformers")
flagembedding = EmbedFinetuneMethod("flagembedding", "flagembedding")
METHODS = {m.name: m for m in (embedding, flagembedding)}

__all__ = ["EmbedFinetuneConfig", "EmbedFinetuneMethod", "EmbedFinetuneResult", "METHODS",
           "embedding", "finetune_embedding", "flagembedding"]
