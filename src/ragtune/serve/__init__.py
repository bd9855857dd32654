"""Serving: an OpenAI-compatible HTTP server over the builtin engine (transformers) or vLLM.

Heavy modules (torch, transformers, fastapi) load only when an engine or the app is created.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ServeConfig": "ragtune.serve.server",
    "ServerThread": "ragtune.serve.server",
    "build_engine": "ragtune.serve.server",
    "serve": "ragtune.serve.server",
    "BuiltinEngine": "ragtune.engine.builtin",
    "SamplingParams": "ragtune.engine.builtin",
    "Completion": "ragtune.engine.builtin",
    "PromptTooLongError": "ragtune.engine.builtin",
    "EmbeddingEngine": "ragtune.engine.embedding",
    "create_app": "ragtune.serve.app",
    "build_vllm_command": "ragtune.engine.vllm",
    "VllmSupervisor": "ragtune.engine.vllm",
    "resolve_source": "ragtune.models.source",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ragtune.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
