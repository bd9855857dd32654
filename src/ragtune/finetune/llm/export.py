"""Write the trained model: ``adapter/`` (PEFT, LoRA only) and ``merged/`` (full weights + tokenizer).

``merged/`` is built on a fresh copy of the base in its original dtype: LoRA is merged there with
peft (tied embeddings stay tied: LoRA never targets the embedding/lm_head), and freeze/full copy only
the trained tensors in, so untouched weights are bit-identical to the base.
"""
from __future__ import annotations

from pathlib import Path

from ...core.io import atomic_dir


def save_adapter(model, tokenizer, path: Path) -> Path:
    with atomic_dir(path) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return path


def _base_dtype(model_dir: str):
    import json

    import torch

    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    name = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    return getattr(torch, name, torch.float32)


def save_merged(tokenizer, model_dir: str, path: Path, adapter: Path | None, trained: dict | None) -> Path:
    """LoRA: base + adapter merged by peft. freeze/full: base with the ``trained`` tensors copied in."""
    import torch
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=_base_dtype(model_dir))
    if adapter is not None:
        from peft import PeftModel

        base = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    else:
        params = dict(base.named_parameters())
        with torch.no_grad():
            for name, tensor in (trained or {}).items():
                params[name].copy_(tensor.to(params[name].dtype))
    with atomic_dir(path) as tmp:
        base.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return path
