"""ragtune's builtin LLM fine-tuning engine (LoRA / freeze / full).

``finetune_llm(cfg)`` or ``finetune_llm(base_model=..., train=..., output_dir=..., method="lora", ...)``.
Heavy imports happen inside the functions.
"""
from __future__ import annotations

from typing import Any

from .config import LLMFinetuneConfig


def finetune_llm(cfg: LLMFinetuneConfig | None = None, /, **values: Any):
    """Train and write ``output_dir`` (see docs/finetune.md); returns a ``TrainResult``."""
    from .trainer import train

    if cfg is None:
        cfg = LLMFinetuneConfig.build(**values)
    elif values:
        cfg = LLMFinetuneConfig.build(**{**cfg.model_dump(exclude_unset=True), **values})
    return train(cfg)


__all__ = ["LLMFinetuneConfig", "finetune_llm"]
