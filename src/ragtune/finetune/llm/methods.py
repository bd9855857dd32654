"""How each method decides what trains: LoRA adapters, the top N layers (freeze), or everything.

Target checks run on a weightless copy of the architecture (``torch.device("meta")``), so a
``lora_target`` that matches nothing fails in a second, before the real weights are read.
"""
from __future__ import annotations

import abc
import re
from typing import Any, ClassVar

from ...core.errors import ConfigError
from ..base import METHODS, FinetuneMethod, FinetuneResult
from .config import FreezeConfig, FullConfig, LoraConfig


def meta_model(model_dir: str):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg)


def linear_module_names(model) -> set[str]:
    """Leaf names (``q_proj``, ``down_proj``...) of every Linear except the output head."""
    import torch

    head = model.get_output_embeddings()
    return {name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear) and mod is not head}


def resolve_lora_targets(model, lora_target) -> list[str]:
    available = linear_module_names(model)
    if lora_target == "all":
        if not available:
            raise ConfigError("lora_target='all' found no linear layers in this model")
        return sorted(available)
    targets = [lora_target] if isinstance(lora_target, str) else list(lora_target)
    missing = [t for t in targets if t not in available]
    if missing:
        raise ConfigError(f"lora_target {missing} match(es) no linear module of this model",
                          hint=f"valid: all, {', '.join(sorted(available))}")
    return targets


def decoder_layers(model):
    """The ModuleList of decoder blocks (``model.model.layers`` for Llama/Gemma/Qwen...)."""
    import torch

    decoder = model.get_decoder()
    for name in ("layers", "h", "blocks"):
        layers = getattr(decoder, name, None)
        if isinstance(layers, torch.nn.ModuleList):
            return layers
    raise ConfigError(f"cannot find the decoder layers of {type(model).__name__} for method 'freeze'",
                      hint="use method lora or full")


def freeze_plan(model, n_layers: int, modules) -> list[str]:
    """Names of parameters that train with method freeze: the top ``n_layers`` blocks (optionally
    only the sub-modules named in ``modules``). Everything else keeps its exact weights."""
    layers = decoder_layers(model)
    if n_layers > len(layers):
        raise ConfigError(f"freeze_trainable_layers={n_layers} but the model has {len(layers)} layers")
    top = set(range(len(layers) - n_layers, len(layers)))
    wanted = None if modules == "all" else ([modules] if isinstance(modules, str) else list(modules))
    names, seen_modules = [], set()
    prefix = _layers_prefix(model, layers)
    for name, _ in model.named_parameters():
        m = re.match(re.escape(prefix) + r"\.(\d+)\.(\w+)", name)
        if not m or int(m.group(1)) not in top:
            continue
        seen_modules.add(m.group(2))
        if wanted is None or m.group(2) in wanted:
            names.append(name)
    if wanted:
        missing = [w for w in wanted if w not in seen_modules]
        if missing:
            raise ConfigError(f"freeze_trainable_modules {missing} not found in the decoder layers",
                              hint=f"valid: all, {', '.join(sorted(seen_modules))}")
    return names


def _layers_prefix(model, layers) -> str:
    for name, mod in model.named_modules():
        if mod is layers:
            return name
    raise ConfigError("decoder layers are not reachable from the model root")


# -- the methods -------------------------------------------------------------------------------------------
class BuiltinLLMMethod(FinetuneMethod):
    """A method of ragtune's own trainer. The trainer asks the method, never its name, what to do:
    which checks to run, how to load and prepare the model, what to save."""

    kind = "llm"
    launchable = True
    trains_adapter: ClassVar[bool] = False   # base frozen in the compute dtype; writes adapter/
    fsdp_capable: ClassVar[bool] = False

    def train(self, cfg: Any) -> FinetuneResult:
        from .trainer import train

        return train(cfg, self)

    def validate(self, cfg: Any) -> None:
        """Config-only checks, before the data or the model are read."""
        if cfg.dtype == "fp16" and not self.trains_adapter:
            raise ConfigError(f"fp16 training is supported for adapter methods only, not '{self.name}'",
                              hint="use dtype bf16 or fp32")
        if getattr(cfg, "fsdp", False) and cfg.dev_metrics:
            raise ConfigError("dev_metrics are not supported with fsdp (the dev decode runs on one rank)",
                              hint="evaluate the saved model with `ragtune infer` + `ragtune eval llm` instead")

    def check(self, cfg: Any, model: Any) -> None:
        """Architecture checks on the weightless (meta) model."""

    @abc.abstractmethod
    def prepare(self, cfg: Any, model: Any) -> Any:
        """The model to train, with ``requires_grad`` set as this method trains."""

    def load_dtype(self, compute_dtype: Any) -> Any:
        """The dtype weights load in: trained weights keep fp32 masters (autocast computes in
        ``compute_dtype``); an adapter method loads the frozen base in the compute dtype."""
        import torch

        return compute_dtype if self.trains_adapter else torch.float32

    def uses_autocast(self, compute_dtype: Any) -> bool:
        import torch

        return not self.trains_adapter and compute_dtype != torch.float32

    def after_prepare(self, cfg: Any, model: Any) -> None:
        """Hook after :meth:`prepare` (LoRA installs its fast path here)."""


class LoraMethod(BuiltinLLMMethod):
    name = "lora"
    config_cls = LoraConfig
    description = "LoRA adapters on linear layers (peft); the base stays frozen"
    trains_adapter = True

    def check(self, cfg, model):
        resolve_lora_targets(model, cfg.lora_target)

    def peft_config(self, cfg, targets: list[str]):
        from peft import LoraConfig as PeftLoraConfig

        return PeftLoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                              target_modules=targets, task_type="CAUSAL_LM")

    def prepare(self, cfg, model):
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(cfg, resolve_lora_targets(model, cfg.lora_target)))

    def after_prepare(self, cfg, model):
        if getattr(cfg, "fast_lora", False):
            from ...models.fast_lora import install

            install(model)


class FreezeMethod(BuiltinLLMMethod):
    name = "freeze"
    config_cls = FreezeConfig
    description = "train the top N decoder layers (optionally only some of their modules)"

    def check(self, cfg, model):
        freeze_plan(model, cfg.freeze_trainable_layers, cfg.freeze_trainable_modules)

    def prepare(self, cfg, model):
        trainable = set(freeze_plan(model, cfg.freeze_trainable_layers, cfg.freeze_trainable_modules))
        for name, p in model.named_parameters():
            p.requires_grad_(name in trainable)
        return model


class FullMethod(BuiltinLLMMethod):
    name = "full"
    config_cls = FullConfig
    description = "every weight trains (FSDP under torchrun on CUDA)"
    fsdp_capable = True

    def prepare(self, cfg, model):
        for p in model.parameters():
            p.requires_grad_(True)
        if not cfg.train_embeddings:
            frozen = {id(model.get_input_embeddings().weight)}
            head = model.get_output_embeddings()
            if head is not None:
                frozen.add(id(head.weight))      # tied to the embeddings in Gemma: frozen with them
            for p in model.parameters():
                if id(p) in frozen:
                    p.requires_grad_(False)
        return model


lora = METHODS.register("lora", LoraMethod())
freeze = METHODS.register("freeze", FreezeMethod())
full = METHODS.register("full", FullMethod())
