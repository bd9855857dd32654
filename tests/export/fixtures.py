"""Tiny models that llama.cpp can run, built in seconds (shared by tests/export and tests/engine).

``make_exportable_llm``: a 3-layer Gemma-3 (sliding, full, sliding attention with a sliding window of
8 tokens, so prompts longer than 8 tokens exercise the per-layer pattern) whose attention scale is
``1/sqrt(head_dim)`` (the one llama.cpp's gemma3 uses), random norm weights (so the +1 norm shift
of the export matters) and the byte-level BPE tokenizer of ``tests/tiny_models.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest


def make_exportable_llm(path: Path, *, chat_template: str | None = None, seed: int = 0) -> Path:
    import torch
    from tiny_models import make_tokenizer
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tok = make_tokenizer(chat_template=chat_template)
    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
        max_position_embeddings=1024, sliding_window=8, tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    model = Gemma3ForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(0.0, 0.3)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_lora_run(base: Path, out: Path, *, rank: int = 4, alpha: int = 8, rslora: bool = False,
                  seed: int = 1) -> Path:
    """A fine-tune output folder like ``ragtune finetune`` writes: ``adapter/`` (PEFT LoRA with
    random, non-zero B so it changes the answers), ``merged/`` and ``ragtune_finetune.json``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(base)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules="all-linear", init_lora_weights=False,
                     use_rslora=rslora, lora_dropout=0.0)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(4.0)  # a clearly visible change of the greedy answers
    peft_model.save_pretrained(out / "adapter")
    tok.save_pretrained(out / "adapter")
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(out / "merged")
    tok.save_pretrained(out / "merged")
    (out / "ragtune_finetune.json").write_text(json.dumps({
        "base_model": str(base), "base_model_path": str(base), "method": "lora", "adapter": "adapter",
        "merged": "merged", "prompt": {"system": None, "drop_builtin_system": False, "template": "auto"}}))
    return out


@pytest.fixture(scope="session")
def g3_dir(tmp_path_factory) -> Path:
    return make_exportable_llm(tmp_path_factory.mktemp("models") / "g3")


@pytest.fixture(scope="session")
def g3_readable_dir(g3_dir, tmp_path_factory) -> Path:
    """``g3`` whose greedy output is readable words and never EOS (see tests/serve/serve_fixtures.py)."""
    from ..serve.serve_fixtures import make_readable_llm

    return make_readable_llm(g3_dir, tmp_path_factory.mktemp("models") / "g3-readable")


@pytest.fixture(scope="session")
def g3_export(g3_readable_dir, tmp_path_factory) -> Path:
    """``ragtune export`` of the readable tiny model at f32 (lossless: llama.cpp must match)."""
    from ragtune.export.job import ExportConfig

    out = tmp_path_factory.mktemp("exports") / "g3-f32"
    ExportConfig(model=str(g3_readable_dir), output=str(out), quant="f32", ollama=True).execute()
    return out


@pytest.fixture(scope="session")
def g3_lora_run(g3_readable_dir, tmp_path_factory) -> Path:
    return make_lora_run(g3_readable_dir, tmp_path_factory.mktemp("runs") / "g3-lora")
