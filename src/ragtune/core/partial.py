"""Resumable partial results: an append-only, fsynced JSONL side file of finished items.

Line 0 is ``{"meta": ...}`` (a fingerprint of the data and of the settings that decide the results);
each further line is one finished item, keyed by ``key(row)``. A rerun with the same meta skips the
items already there; a different meta is refused (``--restart`` starts over), so results of other
data or settings are never mixed in. A killed run leaves at most a torn last line, cut off on the
next start; an item is never recorded twice. Used by ``ragtune infer`` (predictions) and ``ragtune
eval llm`` (judge results).
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from .errors import ConfigError


def _index(row: dict[str, Any]) -> Hashable:
    return int(row["index"])


class PartialResults:
    """Append-only JSONL of finished items; tolerant of a torn last line from a killed run."""

    def __init__(self, path: Path, meta: dict[str, Any], restart: bool = False,
                 key: Callable[[dict[str, Any]], Hashable] = _index):
        self.path, self.meta, self.key = path, meta, key
        self.done: dict[Hashable, dict[str, Any]] = {}
        self._lock = threading.Lock()
        if restart:
            path.unlink(missing_ok=True)
        if path.exists():
            self._load()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"meta": meta}, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        self._fh = open(path, "a", encoding="utf-8")

    def _load(self) -> None:
        raw = self.path.read_bytes()
        good_end, lines = 0, raw.split(b"\n")
        for n, line in enumerate(lines[:-1]):  # the piece after the last newline is torn or empty
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            if n == 0:
                if row.get("meta") != self.meta:
                    raise ConfigError(f"{self.path} holds partial results of a different eval set or different "
                                      "settings", hint="rerun with the same settings, or pass --restart to start over")
            else:
                self.done.setdefault(self.key(row), row)
            good_end += len(line) + 1
        if good_end < len(raw):
            with open(self.path, "r+b") as fh:  # drop the torn tail so appends stay valid JSONL
                fh.truncate(good_end)

    def add(self, row: dict[str, Any]) -> None:
        key = self.key(row)
        with self._lock:
            if key in self.done:
                return
            self.done[key] = row
            self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()
