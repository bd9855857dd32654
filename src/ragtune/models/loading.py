"""The one model-loading policy: every causal LM, tokenizer and sentence-transformers model that
ragtune loads (training, evaluation, RAG, serving, ``TrainableModule``) comes through here.

Policy:
- device: ``None``/``"auto"`` -> ``cuda`` when available, else ``cpu``; an explicit value is used as is;
- dtype: ``auto`` -> bf16 on CUDA with bf16 (else fp16) and on CPUs with native bf16, else fp32
  (:func:`ragtune.models.device.resolve_dtype`);
- threads: left to PyTorch unless a caller passes ``threads`` (the setting is process-wide, so
  ragtune never changes it on its own);
- files: local only (a hub id is resolved by :func:`ragtune.models.resolve_model` first, which
  says clearly when it is not cached and the machine is offline).
"""
from __future__ import annotations

from typing import Any

from ..core.errors import ConfigError
from .device import default_device, resolve_dtype


def resolve_device(device: str | None = None) -> str:
    return default_device() if device in (None, "", "auto") else str(device)


def set_threads(threads: int | None) -> None:
    """Apply an explicit intra-op thread count (process-wide); ``None`` leaves PyTorch's choice."""
    if threads is not None:
        import torch

        torch.set_num_threads(int(threads))


def load_tokenizer(model_ref: str):
    """The tokenizer of an LLM (bundled name, dir, GGUF file or cached hub id)."""
    from .registry import resolve_model

    return _tokenizer(resolve_model(model_ref))


def _tokenizer(resolved: Any):
    from transformers import AutoTokenizer

    kw = {"gguf_file": resolved.gguf_file} if resolved.gguf_file else {}
    return AutoTokenizer.from_pretrained(resolved.path, **kw)


def load_causal_lm(model_ref: str, adapter: Any = None, *, dtype: str = "auto", device: str | None = None,
                   threads: int | None = None, attn_implementation: str | None = None):
    """(model, tokenizer) for inference, in eval mode. A LoRA adapter is applied with peft and kept
    unmerged (merging bf16 weights changes numerics slightly; the unmerged model is what training
    evaluated), with ragtune's fast LoRA path, and the model is returned as the plain HF model."""
    import torch  # noqa: F401  (fail here, clearly, when the [train] extra is missing)
    from transformers import AutoModelForCausalLM

    from .registry import resolve_model

    resolved = resolve_model(model_ref, kind="llm")
    if resolved.kind != "llm":
        raise ConfigError(f"{model_ref} is an embedding model; it cannot generate text")
    set_threads(threads)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    kw: dict[str, Any] = {"gguf_file": resolved.gguf_file} if resolved.gguf_file else {}
    tokenizer = _tokenizer(resolved)
    if attn_implementation:
        kw["attn_implementation"] = attn_implementation
    model: Any = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch_dtype, **kw)  # or a PeftModel below
    if adapter is not None:
        from peft import PeftModel

        from .fast_lora import install

        model = PeftModel.from_pretrained(model, str(adapter))
        install(model)  # adapter branch in the base dtype, fused into its GEMM (as in training)
        model = model.get_base_model()  # LoRA layers are injected in place; generate as plain HF
    model.to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def contiguous_head_input(model: Any) -> None:
    """Generation slices the last position, ``hidden[:, -1:]``: a 3-D view whose batch stride is the
    whole prompt. With frozen weights (``requires_grad=False``, as after loading an adapter) PyTorch's
    linear does not fold that view into one GEMM but expands the 262k x 640 output weight per batch
    row and copies it (5.4 GB for a batch of 8: measured 40% of a 16-prompt batch's time). A
    contiguous input folds; the copy is batch x hidden."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and not getattr(head, "_ragtune_contiguous", False):
        head.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(), *args[1:]))
        head._ragtune_contiguous = True


def load_sentence_transformer(model_ref: str, *, device: str | None = None, threads: int | None = None):
    """A sentence-transformers model (bundled name, dir, tuned output dir or cached hub id)."""
    from sentence_transformers import SentenceTransformer

    from .registry import resolve_model

    set_threads(threads)
    resolved = resolve_model(model_ref, kind="embedding")
    if resolved.kind != "embedding":
        raise ConfigError(f"{model_ref} is an LLM, not an embedding model",
                          hint="pass a sentence-transformers model (e.g. all-MiniLM-L6-v2 or a tuned embed dir)")
    return SentenceTransformer(str(resolved.path), device=resolve_device(device), local_files_only=True)
