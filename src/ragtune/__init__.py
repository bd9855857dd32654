"""ragtune: make the two models of a RAG system (LLM + embedder) understand your domain.

Importing ``ragtune`` is cheap: heavy modules (torch, transformers) load on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it. Resolved lazily so `import ragtune` never imports torch.
_LAZY = {
    "models": "ragtune.models",
    "data": "ragtune.data",
    "finetune": "ragtune.finetune",
    "deploy": "ragtune.serve.deploy",
    "serve": "ragtune.serve",
    "infer": "ragtune.infer",
    "eval": "ragtune.eval",
    "rag": "ragtune.rag",
    "launchers": "ragtune.launch",
    "resolve_model": "ragtune.models:resolve_model",
    "pull_model": "ragtune.models:pull_model",
    "list_models": "ragtune.models:list_models",
    "TrainableModule": "ragtune.workflow.module:TrainableModule",
    "Document": "ragtune.rag:Document",
    "Retriever": "ragtune.rag:Retriever",
    "pipeline": "ragtune.rag:pipeline",
    "bind": "ragtune.rag:bind",
    "ChatPrompter": "ragtune.rag:ChatPrompter",
    "OnlineChatModule": "ragtune.engine.client:OnlineChatModule",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'ragtune' has no attribute {name!r}")
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    value = getattr(module, attr) if attr else module
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
