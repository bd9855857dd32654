"""A PEFT LoRA adapter -> a GGUF LoRA adapter (what ``llama.cpp --lora`` and Ollama's ``ADAPTER`` load).

The layout is llama.cpp's (``convert_lora_to_gguf.py``, ``llama-adapter.cpp``): ``general.type =
adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``, and per adapted weight the pair
``<gguf tensor>.lora_a`` (rank x in, PEFT's ``lora_A``) and ``.lora_b`` (out x rank, PEFT's
``lora_B``); llama.cpp scales by ``alpha / rank``. Written here rather than by running that script
for the reasons in :mod:`ragtune.export.gguf` (it is not shipped in any package), and because the
PEFT variants whose scale is not ``alpha / r`` (rsLoRA, per-module rank/alpha patterns) are exported
exactly by folding each module's own scale into ``lora_b`` (then ``alpha = 0``, which llama.cpp reads
as scale 1). What a LoRA file cannot express (DoRA, ``modules_to_save``, biases, embedding adapters)
is refused with a hint to export merged weights instead.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from ..core.log import get_logger
from .gguf import ExportError, arch_of, read_config

log = get_logger(__name__)
_PEFT_PREFIX = "base_model.model."
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
MERGED_HINT = "export merged weights instead (drop --lora)"


def read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    path = adapter_dir / "adapter_config.json"
    if not path.exists():
        raise ExportError(f"{adapter_dir} has no adapter_config.json: not a PEFT adapter")
    cfg = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    if cfg.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type is {cfg.get('peft_type')} (only LORA)")
    if cfg.get("use_dora"):
        problems.append("it is a DoRA adapter (magnitude vectors have no llama.cpp LoRA form)")
    if cfg.get("modules_to_save"):
        problems.append(f"it fully trains {cfg['modules_to_save']} (modules_to_save), which is not low-rank")
    if cfg.get("bias", "none") != "none":
        problems.append(f"it trains biases (bias={cfg['bias']!r})")
    if cfg.get("fan_in_fan_out"):
        problems.append("fan_in_fan_out=True (Conv1D layers) is not supported")
    if problems:
        raise ExportError(f"{path}: this adapter cannot be written as a GGUF LoRA: " + "; ".join(problems),
                          hint=MERGED_HINT)
    return cfg


def _module_scale(cfg: dict[str, Any], module: str, rank: int) -> float:
    """PEFT's scaling of one module: alpha / r (or alpha / sqrt(r) with rsLoRA), patterns applied."""
    alpha = float(cfg.get("lora_alpha", 8))
    for pattern, value in (cfg.get("alpha_pattern") or {}).items():
        if re.search(rf"(^|\.){pattern}$", module):
            alpha = float(value)
    return alpha / math.sqrt(rank) if cfg.get("use_rslora") else alpha / rank


def _adapter_tensors(adapter_dir: Path) -> dict[str, Any]:
    from safetensors import safe_open

    file = adapter_dir / "adapter_model.safetensors"
    if not file.exists():
        raise ExportError(f"{adapter_dir} has no adapter_model.safetensors",
                          hint="save the adapter with safe_serialization=True")
    out = {}
    with safe_open(str(file), framework="pt") as fh:
        for name in fh.keys():
            out[name] = fh.get_tensor(name).float().numpy()
    return out


def lora_pairs(adapter_dir: Path, n_layers: int, gguf_arch: str) -> tuple[list[tuple[str, Any, Any]], bool]:
    """[(gguf weight name, lora_a, lora_b)] and whether the per-module scales had to be folded."""
    import gguf

    cfg = read_adapter_config(adapter_dir)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[gguf_arch.upper()], n_layers)
    pairs: dict[str, dict[str, Any]] = {}
    for key, data in _adapter_tensors(adapter_dir).items():
        if "lora_embedding" in key or "lora_magnitude" in key:
            raise ExportError(f"{adapter_dir}: tensor {key} (embedding/DoRA) has no GGUF LoRA form", hint=MERGED_HINT)
        match = _KEY.match(key)
        if match is None:
            raise ExportError(f"{adapter_dir}: unexpected tensor {key} in a LoRA adapter", hint=MERGED_HINT)
        module = match["module"].removeprefix(_PEFT_PREFIX)
        pairs.setdefault(module, {})[match["ab"]] = data
    fold = bool(cfg.get("use_rslora") or cfg.get("alpha_pattern") or cfg.get("rank_pattern"))
    out = []
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise ExportError(f"{adapter_dir}: {module} has lora_{'A' if 'A' in ab else 'B'} but not its pair")
        target = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if target is None:
            raise ExportError(f"{adapter_dir}: adapted module {module} has no {gguf_arch} GGUF tensor",
                              hint=MERGED_HINT)
        a, b = ab["A"], ab["B"]
        if fold:
            b = b * _module_scale(cfg, module, a.shape[0])
        out.append((target, a, b))
    if not out:
        raise ExportError(f"{adapter_dir} holds no LoRA weights")
    return out, fold


def write_lora_gguf(adapter_dir: str | os.PathLike, base_dir: str | os.PathLike, out_file: str | os.PathLike,
                    name: str | None = None) -> Path:
    """Write the adapter at ``adapter_dir`` (for the base model at ``base_dir``) as a GGUF LoRA (f32)."""
    import gguf
    import numpy as np

    adapter_dir, base_dir, out_file = Path(adapter_dir), Path(base_dir), Path(out_file)
    base_cfg = read_config(base_dir)
    arch = arch_of(base_cfg, base_dir)
    cfg = read_adapter_config(adapter_dir)
    pairs, folded = lora_pairs(adapter_dir, int(base_cfg["num_hidden_layers"]), arch.gguf_arch)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.tmp-{os.getpid()}")
    try:
        writer = gguf.GGUFWriter(str(tmp), arch.gguf_arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_name(name or adapter_dir.name)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 0.0 if folded else float(cfg.get("lora_alpha", 8)))
        for target, a, b in pairs:
            writer.add_tensor(target + ".lora_a", np.ascontiguousarray(a, dtype=np.float32))
            writer.add_tensor(target + ".lora_b", np.ascontiguousarray(b, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out_file)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote LoRA adapter %s (%d adapted weights, rank %d%s)", out_file, len(pairs), pairs[0][1].shape[0],
             ", per-module scales folded into lora_b" if folded else "")
    return out_file
