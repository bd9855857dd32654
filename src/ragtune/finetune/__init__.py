"""Fine-tuning methods, registered by name (peft style): ``rt.finetune.lora``, ``.freeze``, ``.full``,
``.llamafactory``, and (from ``ragtune.finetune.embed``) ``.embedding`` and ``.flagembedding``.

A method is a small self-describing object: ``.name``, ``.config_cls``, ``.config(**kw)`` (validated
hyper-parameters; unknown keys are errors naming the valid ones) and ``.run(base, train, output, **kw)``.
Calling it (``rt.finetune.lora(learning_rate=1e-4)``) returns a bound ``(method, config)`` pair, which
is what ``TrainableModule.finetune_method`` stores. Importing this module does not import torch.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from ..core.errors import ConfigError


@dataclass(frozen=True)
class FinetuneMethod:
    name: str
    kind: str                      # "llm" | "embedding"
    config_loader: Callable[[], type] = field(repr=False)
    runner: str = field(repr=False)             # "module:function" taking the config
    defaults: dict = field(default_factory=dict, repr=False)

    @property
    def config_cls(self) -> type:
        return self.config_loader()

    def config(self, **values: Any):
        return self.config_cls.build(**{**self.defaults, **values})

    def __call__(self, **values: Any) -> "BoundMethod":
        return BoundMethod(self, self.config(**values))

    def run_config(self, cfg):
        """Run with an already-validated config object."""
        return BoundMethod(self, cfg).run()

    def run(self, base_model: str, train: str, output_dir: str, **values: Any):
        cfg = self.config(base_model=base_model, train=train, output_dir=output_dir, **values)
        return BoundMethod(self, cfg).run()


@dataclass(frozen=True)
class BoundMethod:
    method: FinetuneMethod
    cfg: Any

    @property
    def name(self) -> str:
        return self.method.name

    def run(self, **values: Any):
        cfg = self.cfg
        if values:
            cfg = self.method.config_cls.build(**{**cfg.model_dump(exclude_unset=True), **values})
        module, _, fn = self.method.runner.partition(":")
        return getattr(importlib.import_module(module), fn)(cfg)


def _llm_config():
    from .llm.config import LLMFinetuneConfig

    return LLMFinetuneConfig


def _lf_config():
    from .llamafactory import LlamaFactoryConfig

    return LlamaFactoryConfig


REGISTRY: dict[str, FinetuneMethod] = {}


def register(method: FinetuneMethod) -> FinetuneMethod:
    REGISTRY[method.name] = method
    return method


lora = register(FinetuneMethod("lora", "llm", _llm_config, "ragtune.finetune.llm.trainer:train", {"method": "lora"}))
freeze = register(FinetuneMethod("freeze", "llm", _llm_config, "ragtune.finetune.llm.trainer:train", {"method": "freeze"}))
full = register(FinetuneMethod("full", "llm", _llm_config, "ragtune.finetune.llm.trainer:train", {"method": "full"}))
llamafactory = register(FinetuneMethod("llamafactory", "llm", _lf_config, "ragtune.finetune.llamafactory:train"))

_EMBED = ("embedding", "flagembedding")


def get_method(name: str) -> Any:
    """A method by name (``"lora"``...); unknown names list the valid ones."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name in _EMBED:
        return __getattr__(name)
    raise ConfigError(f"unknown fine-tune method '{name}'",
                      hint="valid: " + ", ".join([*REGISTRY, *_EMBED]))


def __getattr__(name: str) -> Any:
    # the embedding methods live in ragtune.finetune.embed (another module, maybe not installed yet)
    if name in _EMBED:
        module = importlib.import_module("ragtune.finetune.embed")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ragtune.finetune' has no attribute {name!r}")


__all__ = ["BoundMethod", "FinetuneMethod", "REGISTRY", "get_method", "register", "lora", "freeze", "full",
           "llamafactory", *_EMBED]
