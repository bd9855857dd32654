"""An append-only, fsynced JSONL journal of teacher answers: what makes synth and label resumable.

Line 0 is ``{"meta": ...}`` (the teacher, the prompt, the chunking: a resumed run must match it);
each further line is one finished unit (a chunk, a question) keyed by ``key``. A killed run leaves
at most a torn last line, which is cut off on the next start; a unit is never journaled twice, so
a resumed run neither asks the teacher again for finished units nor duplicates their items.
Units whose teacher request failed are journaled with ``status: "teacher_error"`` and asked again
on the next run (an error is not an answer).
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError

FINAL = ("ok", "unparseable")   # statuses that are answers; "teacher_error" is retried on resume


class Journal:
    def __init__(self, path: str | os.PathLike, meta: dict[str, Any], restart: bool = False):
        self.path, self.meta = Path(path), meta
        self.entries: dict[str, dict[str, Any]] = {}
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
        for n, line in enumerate(raw.split(b"\n")[:-1]):   # what follows the last newline is torn
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            if n == 0:
                if row.get("meta") != self.meta:
                    changed = sorted(k for k in set(self.meta) | set(row.get("meta") or {})
                                     if (row.get("meta") or {}).get(k) != self.meta.get(k))
                    raise ConfigError(f"{self.path} was written with other settings (changed: {', '.join(changed)})",
                                      hint="use the same settings to resume, or restart=True (--restart) to start over")
            else:
                self.entries[row["key"]] = row   # a retried teacher_error is superseded by its later line
            good_end += len(line) + 1
        if good_end < len(raw):
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)

    def done(self, key: str) -> bool:
        entry = self.entries.get(key)
        return entry is not None and entry.get("status") in FINAL

    def add(self, key: str, **row: Any) -> None:
        row = {"key": key, **row}
        with self._lock:
            if self.done(key):
                return
            self.entries[key] = row
            self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
