"""Device and precision choice: bf16 where the hardware does it natively, fp32 otherwise."""
from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16 on x86 (Linux /proc/cpuinfo); without them bf16 matmuls are
    emulated and slower than fp32, so we stay in fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str = "auto", device: str | None = None):
    """``auto`` -> bf16 on CUDA with bf16 support or on CPUs with native bf16, else fp32."""
    import torch

    if dtype not in ("auto", None):
        table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
                 "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}
        if dtype not in table:
            from ..core.errors import ConfigError

            raise ConfigError(f"unknown dtype '{dtype}'; valid: auto, {', '.join(table)}")
        return table[dtype]
    device = device or default_device()
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
