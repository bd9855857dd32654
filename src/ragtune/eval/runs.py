"""The eval run directory, the one schema every evaluation writes and ``ragtune eval compare`` reads:
``summary.json`` (run id, name, item count, per metric its description and aggregate) and
``items.json`` (per item its question, reference, prediction and per-metric score)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..core.errors import DataError


@dataclass
class EvalRun:
    path: Path
    summary: dict[str, Any]
    items: list[dict[str, Any]]


def load_run(path: str | Path) -> EvalRun:
    path = Path(path)
    for name in ("summary.json", "items.json"):
        if not (path / name).is_file():
            raise DataError(f"not an eval run directory (no {name})", file=str(path),
                            hint="pass directories written by `ragtune eval llm`")
    return EvalRun(path, json.loads((path / "summary.json").read_text(encoding="utf-8")),
                   json.loads((path / "items.json").read_text(encoding="utf-8")))


def find_runs(paths: Sequence[str | Path]) -> list[EvalRun]:
    """Each path is a run directory, or a parent whose eval-* subdirectories are runs (sorted by
    run id, i.e. by creation)."""
    runs = []
    for p in map(Path, paths):
        if (p / "summary.json").is_file():
            runs.append(load_run(p))
            continue
        subs = sorted(d for d in p.glob("eval-*") if (d / "summary.json").is_file()) if p.is_dir() else []
        if not subs:
            raise DataError("no eval run found (neither summary.json nor eval-*/summary.json)", file=str(p))
        runs.extend(load_run(d) for d in subs)
    return runs


def write_run(path: str | Path, summary: dict[str, Any], items: list[dict[str, Any]]) -> EvalRun:
    """Write a run directory atomically (the one writer of the schema ``load_run`` reads)."""
    from ..core.io import atomic_dir, atomic_write_json

    path = Path(path)
    with atomic_dir(path) as tmp:
        atomic_write_json(tmp / "items.json", items)
        atomic_write_json(tmp / "summary.json", summary)
    return EvalRun(path, summary, items)
