"""Embedding sets: the one reader of embedding training and retrieval eval files.

Shapes (what ``ragtune data embed-pairs`` writes, and what FlagEmbedding reads):
- train: ``{"query": str, "pos": [str, ...], "neg": [str, ...], "prompt": str?}`` per line
- eval:  ``{"query": str, "corpus": [str, ...]}`` per line
Files may be JSON lines, one JSON list, CSV or Parquet (the one reader, :mod:`.readers`);
``datasets.to_json`` writes JSON lines into ``.json``. An eval set may also be a BEIR directory
(``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``; see :mod:`.beir`).
"""
from __future__ import annotations

from collections.abc import Sequence
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


def load_eval(path: str | Path, *, split: str = "test", allow_unjudged: bool = False) -> list[RetrievalItem]:
    """The eval items of ``path``: an eval file, or a BEIR directory (its judged queries of
    ``split``, each with its relevant passages; ``allow_unjudged`` as in :func:`.beir.read_beir`)."""
    return load_eval_with_corpus(path, split=split, allow_unjudged=allow_unjudged)[0]


def load_eval_with_corpus(path: str | Path, *, split: str = "test",
                          allow_unjudged: bool = False) -> tuple[list[RetrievalItem], list[str]]:
    """The eval items of ``path`` and the retrieval pool: for a BEIR directory its whole corpus
    (relevant passages and distractors), for an eval file the items' distinct passages."""
    from .beir import looks_like_beir_dir, read_beir

    if looks_like_beir_dir(path):
        return read_beir(path, split, allow_unjudged=allow_unjudged)
    if Path(path).is_dir():
        raise DataError("is a directory, not an eval file nor a BEIR directory", file=str(path),
                        hint="pass a .jsonl eval file, or a directory with corpus.jsonl, queries.jsonl and "
                             "qrels/<split>.tsv")
    file = str(path)
    items = [RetrievalItem(_query(row, file, i), _text_list(row, "corpus", file, i, True))
             for i, row in enumerate(read_records(path))]
    return items, eval_corpus(items)[0]


def eval_corpus(items: list[RetrievalItem], pool: Sequence[str] = ()) -> tuple[list[str], list[set[int]]]:
    """Unique passages of an eval set and, per query, the ids of its relevant passages.

    With ``pool`` (e.g. a BEIR corpus) the passages are the pool's, in its order, followed by any
    relevant passage the pool lacks; without it, the items' passages in first-seen order."""
    ids: dict[str, int] = {}
    for text in pool:
        ids.setdefault(text, len(ids))
    relevant = []
    for it in items:
        rel = set()
        for text in it.corpus:
            rel.add(ids.setdefault(text, len(ids)))
        relevant.append(rel)
    return list(ids), relevant
