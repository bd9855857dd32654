"""Batch inference over an eval set (local engine or any OpenAI-compatible URL) and LLM clients."""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "InferConfig": "ragtune.infer.runner",
    "run_infer": "ragtune.infer.runner",
    "load_evalset": "ragtune.infer.runner",
    "CHAPTER_TEMPLATE": "ragtune.infer.runner",
    "OnlineChatModule": "ragtune.engine.client",
    "LocalLLM": "ragtune.engine.client",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ragtune.infer' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
