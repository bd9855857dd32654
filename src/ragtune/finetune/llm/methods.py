"""How each method decides what trains: LoRA adapters, the top N layers (freeze), or everything.

Target checks run on a weightless copy of the architecture (``torch.device("meta")``), so a
``lora_target`` that matches nothing fails in a second, before the real weights are read.
"""
from __future__ import annotations

import re

from ...core.errors import ConfigError


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


def check_method(cfg, model_dir: str) -> None:
    """All method-specific checks that need only the architecture (no weights)."""
    if cfg.method == "full" and cfg.fsdp is False:
        return
    model = meta_model(model_dir)
    if cfg.method == "lora":
        resolve_lora_targets(model, cfg.lora_target)
    elif cfg.method == "freeze":
        freeze_plan(model, cfg.freeze_trainable_layers, cfg.freeze_trainable_modules)


def apply_method(model, cfg):
    """Return the model to train (PEFT-wrapped for LoRA) with requires_grad set per method."""
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        targets = resolve_lora_targets(model, cfg.lora_target)
        lcfg = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=targets, task_type="CAUSAL_LM")
        return get_peft_model(model, lcfg)
    if cfg.method == "freeze":
        trainable = set(freeze_plan(model, cfg.freeze_trainable_layers, cfg.freeze_trainable_modules))
        for name, p in model.named_parameters():
            p.requires_grad_(name in trainable)
        return model
    for p in model.parameters():
        p.requires_grad_(True)
    return model
