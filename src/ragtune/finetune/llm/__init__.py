"""ragtune's builtin LLM fine-tuning engine: methods lora / freeze / full (see ``methods.py``)."""
from __future__ import annotations

from .config import FreezeConfig, FullConfig, LLMFinetuneConfig, LoraConfig

__all__ = ["FreezeConfig", "FullConfig", "LLMFinetuneConfig", "LoraConfig"]
