"""``ragtune ui``: a local web app over run directories: watch, start, stop and resume runs, check
data, compare evals, try retrieval and chat with base vs tuned models.

Everything it shows is read from disk at request time (see :mod:`ragtune.ui.scan`), so a refresh,
a dropped connection or several tabs show the same state; training always runs as its own
``ragtune run`` process (:mod:`ragtune.ui.procs`). Needs the ``[ui]`` extra (FastAPI, uvicorn).
"""
from __future__ import annotations

from typing import Any


def create_app(runs_dir: Any, **kwargs: Any):
    """The FastAPI app (imported lazily: ``import ragtune`` never pulls FastAPI)."""
    from .app import create_app as _create

    return _create(runs_dir, **kwargs)


__all__ = ["create_app"]
