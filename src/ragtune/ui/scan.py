"""What is on disk under the runs directory, read fresh on every request (the UI keeps no state of
its own, so a refresh, a reconnect or a second tab shows exactly what the files say).

Kinds of directories recognised (each written by ragtune itself):

- ``run``: a ``ragtune run`` directory: ``config.yaml`` (the resolved RunConfig) and stage
  directories ``<stage>/config.json`` (+ ``log.txt``, ``.stage.json`` once finished), and
  ``process.json`` / ``console.log`` when the UI started it;
- ``finetune``: a fine-tune output (``ragtune finetune llm --output DIR``): ``progress.jsonl``,
  ``train.log``, ``checkpoints/``, ``metrics.json`` and ``ragtune_finetune.json`` at the end;
- ``embedder``: a sentence-transformers folder (``ragtune finetune embed --output DIR``);
- ``eval``: an eval run (``summary.json`` + ``items.json``), alone or under ``eval-<id>/``;
- ``retrieval``: a retrieval eval (``ragtune eval retrieval --output DIR``: ``retrieval.json``);
- ``sweep``: ``ragtune sweep`` output (``sweep.json`` ranking the runs in its subdirectories).

Any other output a run directory holds (reports, charts, JSON of sweeps) is listed as a file.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, DataError

STAGE_MARKER = ".stage.json"          # ragtune.workflow.stages.MARKER (not imported: keeps this light)
PROGRESS = "progress.jsonl"
FINETUNE_MANIFEST = "ragtune_finetune.json"
PROCESS_FILE = "process.json"         # written by ragtune.ui.procs
CONSOLE_LOG = "console.log"
# never descended into: model weights, checkpoints, caches
_SKIP = {"checkpoints", "merged", "adapter", "__pycache__", "node_modules", "tokenized"}
MAX_DEPTH = 6


@dataclass(frozen=True)
class Entry:
    path: Path
    kind: str          # run | finetune | embedder | eval


def classify(path: Path) -> str | None:
    if (path / "summary.json").is_file() and (path / "items.json").is_file():
        return "eval"
    if (path / "config.yaml").is_file() and any((d / "config.json").is_file() for d in _subdirs(path)):
        return "run"
    if (path / PROCESS_FILE).is_file():
        return "run"                     # started by the UI; the CLI has not written config.yaml yet
    if (path / PROGRESS).is_file() or (path / FINETUNE_MANIFEST).is_file() or (path / "train.log").is_file():
        return "finetune"
    if (path / "modules.json").is_file() and (path / "config_sentence_transformers.json").is_file():
        return "embedder"
    if (path / "retrieval.json").is_file():
        return "retrieval"               # ragtune eval retrieval --output DIR
    if (path / "sweep.json").is_file():
        return "sweep"                   # ragtune sweep: its runs are in subdirectories
    return None


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []


def scan(root: Path) -> list[Entry]:
    """Every recognised directory under ``root`` (``root`` itself included), outer ones first."""
    out: list[Entry] = []

    def walk(path: Path, depth: int) -> None:
        kind = classify(path)
        if kind is not None:
            out.append(Entry(path, kind))
            if kind in ("eval", "embedder", "retrieval"):
                return
        if depth >= MAX_DEPTH:
            return
        for sub in sorted(_subdirs(path)):
            if sub.name not in _SKIP and not sub.name.endswith(".launch"):
                walk(sub, depth + 1)

    if root.is_dir():
        walk(root, 0)
    return out


def rel(root: Path, path: Path) -> str:
    """The id the UI uses for a directory: its path relative to the runs root ("." for the root)."""
    return str(path.relative_to(root)) if path != root else "."


def resolve_inside(root: Path, rel_id: str) -> Path:
    """``root/rel_id``, refusing anything that leaves ``root`` (ids come from the browser)."""
    path = (root / rel_id).resolve()
    if path != root and root not in path.parents:
        raise ConfigError(f"'{rel_id}' is outside the runs directory {root}")
    if not path.exists():
        raise DataError("does not exist", file=str(path))
    return path


def top_level(entries: list[Entry]) -> list[Entry]:
    """Entries not inside a ``run`` entry (a run shows its own fine-tune and evals)."""
    runs = [e.path for e in entries if e.kind == "run"]
    return [e for e in entries if not any(r != e.path and r in e.path.parents for r in runs)]


# -- reading files ----------------------------------------------------------------------------------
def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def tail(path: Path, lines: int = 200, max_bytes: int = 256_000) -> str:
    """The last ``lines`` lines of a (possibly growing) text file; tqdm's carriage returns are
    resolved to the last state of each line, as a terminal would show it."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if size > max_bytes:
        text = text.split("\n", 1)[-1]
    shown = [line.rsplit("\r", 1)[-1] if "\r" in line.rstrip("\r") else line.rstrip("\r")
             for line in text.split("\n")]
    return "\n".join(shown[-lines:])


_NOT_SERIES = {"step", "time", "total_steps", "epoch"}


def flatten_numbers(entry: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """Numeric values of a progress line, nested dicts flattened with dots (``dev.exact``), so
    metrics that other ragtune versions add show up without the UI knowing their names."""
    for key, value in entry.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            if not prefix and key in _NOT_SERIES:
                continue
            yield name, float(value)
        elif isinstance(value, dict):
            yield from flatten_numbers(value, name + ".")


def read_progress(path: Path, offset: int = 0) -> dict[str, Any]:
    """New complete lines of ``progress.jsonl`` from byte ``offset``: ``{"offset": next offset,
    "reset": True when the file was restarted (shorter than offset), "points": {series:
    [[step, value], ...]}, "last": last entry, "total_steps", "bad_lines"}``."""
    out: dict[str, Any] = {"offset": offset, "reset": False, "points": {}, "last": None,
                           "total_steps": None, "bad_lines": 0, "first_time": None}
    try:
        size = path.stat().st_size
    except OSError:
        return out
    if size < offset:                      # a fresh start deleted the old progress log
        offset, out["reset"] = 0, True
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1            # a line still being written is read next time
    for raw in data[:end].splitlines():
        try:
            entry = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            out["bad_lines"] += 1
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("step"), (int, float)):
            out["bad_lines"] += 1
            continue
        for name, value in flatten_numbers(entry):
            out["points"].setdefault(name, []).append([entry["step"], value])
        if entry.get("total_steps") is not None:
            out["total_steps"] = entry["total_steps"]
        if out["first_time"] is None and entry.get("time") is not None:
            out["first_time"] = entry["time"]
        out["last"] = entry
    out["offset"] = offset + end
    return out


def mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def newest_mtime(path: Path, names: tuple[str, ...]) -> float | None:
    times = [t for t in (mtime(path / n) for n in names) if t is not None]
    return max(times) if times else None


def age(ts: float | None) -> float | None:
    return None if ts is None else round(time.time() - ts, 1)
