"""Charts without pyplot: ``matplotlib.figure.Figure`` renders to PNG through its own canvas, so
ragtune never switches the global matplotlib backend (``matplotlib.use("Agg")`` would change a
notebook user's backend) and never leaves figures open in pyplot's registry."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any


def figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] = (7, 4), dpi: int = 100):
    """(figure, axes) like ``plt.subplots``, detached from pyplot."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(nrows, ncols)


def png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def save_png(fig: Any, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` atomically."""
    from .io import atomic_open

    with atomic_open(path, "wb", encoding=None) as fh:
        fig.savefig(fh, format="png")
    return Path(path)
