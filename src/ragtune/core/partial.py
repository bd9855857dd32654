"""Resumable work: an append-only, fsynced JSONL journal of finished items.

Line 0 is ``{"meta": ...}`` (a fingerprint of the data and of the settings that decide the results);
each further line is one finished item. A rerun with the same meta skips the items already there; a
different meta is refused (``--restart`` starts over), so results of other data or settings are never
mixed in. A killed run leaves at most a torn last line, cut off on the next start; an item is never
recorded twice. :class:`AppendJournal` is the file; :class:`PartialResults` (``ragtune infer``
predictions, ``ragtune eval llm`` judge results) and ``synth.journal.Journal`` (teacher answers) say
what counts as finished.
"""
from __future__ import annotations

import abc
import json
import os
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from .errors import ConfigError


class AppendJournal(abc.ABC):
    """The JSONL file: meta line, load with torn-tail repair, fsynced appends, thread-safe."""

    def __init__(self, path: str | os.PathLike, meta: dict[str, Any], restart: bool = False):
        self.path, self.meta = Path(path), meta
        self._lock = threading.Lock()
        if restart:
            self.path.unlink(missing_ok=True)
        if self.path.exists():
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"meta": meta}, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        self._fh = open(self.path, "a", encoding="utf-8")

    def _load(self) -> None:
        raw = self.path.read_bytes()
        good_end = 0
        for n, line in enumerate(raw.split(b"\n")[:-1]):   # what follows the last newline is torn or empty
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            if n == 0:
                self._check_meta(row.get("meta") or {})
            else:
                self._loaded(row)
            good_end += len(line) + 1
        if good_end < len(raw):
            with open(self.path, "r+b") as fh:   # drop the torn tail so appends stay valid JSONL
                fh.truncate(good_end)

    def _check_meta(self, old: dict[str, Any]) -> None:
        if old != self.meta:
            changed = sorted(k for k in set(self.meta) | set(old) if old.get(k) != self.meta.get(k))
            raise ConfigError(f"{self.path} was written for other data or settings (changed: {', '.join(changed)})",
                              hint="rerun with the same settings to resume, or pass --restart to start over")

    @abc.abstractmethod
    def _loaded(self, row: dict[str, Any]) -> None:
        """One finished row read back from the file (each kind of journal keeps its own index)."""

    def _append(self, row: dict[str, Any]) -> None:
        """Write one row durably (the caller holds ``self._lock``)."""
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _index(row: dict[str, Any]) -> Hashable:
    return int(row["index"])


class PartialResults(AppendJournal):
    """Finished items keyed by ``key(row)`` (default its ``index``); the first record of a key wins."""

    def __init__(self, path: Path, meta: dict[str, Any], restart: bool = False,
                 key: Callable[[dict[str, Any]], Hashable] = _index):
        self.key = key
        self.done: dict[Hashable, dict[str, Any]] = {}
        super().__init__(path, meta, restart)

    def _loaded(self, row: dict[str, Any]) -> None:
        self.done.setdefault(self.key(row), row)

    def add(self, row: dict[str, Any]) -> None:
        key = self.key(row)
        with self._lock:
            if key in self.done:
                return
            self.done[key] = row
            self._append(row)
