"""Fine-tuning methods, registered by name (peft style): ``rt.finetune.lora``, ``.freeze``, ``.full``,
``.llamafactory``, ``.embedding``, ``.flagembedding`` and any plugin (see :mod:`ragtune.finetune.base`).

Importing this package does not import torch.
"""
from __future__ import annotations

from typing import Any

from .base import (
    METHODS,
    PATH_FIELDS,
    BoundMethod,
    FinetuneConfig,
    FinetuneMethod,
    FinetuneResult,
    finetune_config,
    get_method,
)


def __getattr__(name: str) -> Any:
    # rt.finetune.lora, rt.finetune.embedding ...: the registered method objects
    if not name.startswith("_") and name in METHODS:
        return METHODS.get(name)
    raise AttributeError(f"module 'ragtune.finetune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, *METHODS.names()])


__all__ = ["METHODS", "PATH_FIELDS", "BoundMethod", "FinetuneConfig", "FinetuneMethod", "FinetuneResult",
           "finetune_config", "get_method"]
