"""Embedding sets: the one reader of embedding training and retrieval eval files.

Shapes (what ``ragtune data embed-pairs`` writes, and what FlagEmbedding reads):
- train: ``{"query": str, "pos": [str, ...], "neg": [str, ...], "prompt": str?}`` per line
- eval:  ``{"query": str, "corpus": [str, ...]}`` per line
Files may be JSON lines, one JSON list, CSV or Parquet (the one reader, :mod:`.readers`);
``datasets.to_json`` writes JSON lines into ``.json``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import DataError


def read_records(path: str | Path, what: str = "embedding set") -> list[dict[str, Any]]:
    from .readers import read_items

    return read_items(path, what=what)


def _text_list(row: dict, key: str, file: str, i: int, required: bool) -> list[str]:
    value = row.get(key)
    if value is None:
        if required:
            raise DataError("missing", file=file, record=i, field=key,
                            hint="embedding records look like {query, pos:[..], neg:[..]}")
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"must be a list of strings, got {type(value).__name__}", file=file, record=i, field=key)
    value = [v for v in value if v.strip()]
    if required and not value:
        raise DataError("is empty", file=file, record=i, field=key)
    return value


def _query(row: dict, file: str, i: int) -> str:
    q = row.get("query")
    if not isinstance(q, str) or not q.strip():
        raise DataError("must be a non-empty string", file=file, record=i, field="query")
    return q


@dataclass
class TrainRecord:
    query: str
    pos: list[str]
    neg: list[str] = field(default_factory=list)
    prompt: str | None = None


def load_train(path: str | Path) -> list[TrainRecord]:
    file = str(path)
    out = []
    for i, row in enumerate(read_records(path)):
        prompt = row.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise DataError("must be a string", file=file, record=i, field="prompt")
        out.append(TrainRecord(_query(row, file, i), _text_list(row, "pos", file, i, True),
                               _text_list(row, "neg", file, i, False), prompt))
    return out


@dataclass
class RetrievalItem:
    query: str
    corpus: list[str]


def load_eval(path: str | Path) -> list[RetrievalItem]:
    file = str(path)
    return [RetrievalItem(_query(row, file, i), _text_list(row, "corpus", file, i, True))
            for i, row in enumerate(read_records(path))]


def eval_corpus(items: list[RetrievalItem]) -> tuple[list[str], list[set[int]]]:
    """Unique passages of an eval set and, per query, the ids of its relevant passages."""
    ids: dict[str, int] = {}
    relevant = []
    for it in items:
        rel = set()
        for text in it.corpus:
            rel.add(ids.setdefault(text, len(ids)))
        relevant.append(rel)
    return list(ids), relevant
