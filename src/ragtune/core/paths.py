"""Where ragtune keeps its cache (converted models, tokenization caches)."""
from __future__ import annotations

import os
from pathlib import Path


def ragtune_home() -> Path:
    """``$RAGTUNE_HOME``, default ``~/.cache/ragtune``."""
    return Path(os.environ.get("RAGTUNE_HOME") or Path.home() / ".cache" / "ragtune").expanduser()


def models_dir() -> Path:
    return ragtune_home() / "models"
