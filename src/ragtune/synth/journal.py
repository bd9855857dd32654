"""The journal of teacher answers: what makes synth and label resumable.

The file is a :class:`ragtune.core.partial.AppendJournal` whose meta is the teacher, the prompt and
the chunking (a resumed run must match it); each further line is one finished unit (a chunk, a
question) keyed by ``key``, so a resumed run neither asks the teacher again for finished units nor
duplicates their items. Units whose teacher request failed are journaled with
``status: "teacher_error"`` and asked again on the next run (an error is not an answer).
"""
from __future__ import annotations

import os
from typing import Any

from ..core.partial import AppendJournal

FINAL = ("ok", "unparseable")   # statuses that are answers; "teacher_error" is retried on resume


class Journal(AppendJournal):
    def __init__(self, path: str | os.PathLike, meta: dict[str, Any], restart: bool = False):
        self.entries: dict[str, dict[str, Any]] = {}
        super().__init__(path, meta, restart)

    def _loaded(self, row: dict[str, Any]) -> None:
        self.entries[row["key"]] = row   # a retried teacher_error is superseded by its later line

    def done(self, key: str) -> bool:
        entry = self.entries.get(key)
        return entry is not None and entry.get("status") in FINAL

    def add(self, key: str, **row: Any) -> None:
        row = {"key": key, **row}
        with self._lock:
            if self.done(key):
                return
            self.entries[key] = row
            self._append(row)
