"""Read and check embedding training/eval files; build the held-out retrieval task.

Shapes (what ``ragtune data embed-pairs`` writes, and what FlagEmbedding reads):
- train: ``{"query": str, "pos": [str, ...], "neg": [str, ...], "prompt": str?}`` per line
- eval:  ``{"query": str, "corpus": [str, ...]}`` per line
Files may be JSON lines or one JSON list; ``datasets.to_json`` writes JSON lines into ``.json``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import DataError


def read_records(path: str | Path) -> list[dict[str, Any]]:
    from ...io import read_json_records

    return read_json_records(path)


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
class EvalItem:
    query: str
    corpus: list[str]


def load_eval(path: str | Path) -> list[EvalItem]:
    file = str(path)
    return [EvalItem(_query(row, file, i), _text_list(row, "corpus", file, i, True))
            for i, row in enumerate(read_records(path))]


def split_train(records: list[TrainRecord], share: float, seed: int) -> tuple[list[TrainRecord], list[EvalItem]]:
    """Hold out ``share`` of the records (seeded) as an eval task {query, corpus=its positives}."""
    if share <= 0:
        return records, []
    idx = list(range(len(records)))
    random.Random(seed).shuffle(idx)
    n_eval = max(1, round(len(records) * share))
    if n_eval >= len(records):
        raise DataError(f"eval_split {share} leaves no training records out of {len(records)}")
    held = set(idx[:n_eval])
    train = [r for i, r in enumerate(records) if i not in held]
    evals = [EvalItem(records[i].query, list(records[i].pos)) for i in sorted(held)]
    return train, evals


def query_instruction(records: list[TrainRecord], configured: str | None) -> str:
    """The configured instruction, else the records' common 'prompt' (FlagEmbedding's convention)."""
    if configured is not None:
        return configured
    prompts = {r.prompt for r in records if r.prompt}
    if len(prompts) > 1:
        raise DataError(f"records carry {len(prompts)} different 'prompt' values; one model can save "
                        "only one query instruction", field="prompt",
                        hint="set query_instruction explicitly (--query-instruction)")
    return prompts.pop() if prompts else ""


def training_rows(records: list[TrainRecord], n_neg: int, seed: int) -> dict[str, list[str]]:
    """Columns for MultipleNegativesRankingLoss: query, pos, neg_0..neg_{n_neg-1}; one row per positive.

    Records with fewer than ``n_neg`` negatives get extra ones drawn from other records' positives
    (seeded), so every row has the same columns; that fill is logged by the caller."""
    rng = random.Random(seed)
    all_pos = [p for r in records for p in r.pos]
    cols: dict[str, list[str]] = {"query": [], "pos": [], **{f"neg_{j}": [] for j in range(n_neg)}}
    for r in records:
        own = set(r.pos)
        for p in r.pos:
            negs = [n for n in r.neg if n not in own][:n_neg]
            tries = 0
            while len(negs) < n_neg and tries < 50 * n_neg:
                cand = rng.choice(all_pos)
                tries += 1
                if cand not in own and cand not in negs:
                    negs.append(cand)
            if len(negs) < n_neg:
                raise DataError(f"cannot find {n_neg} distinct negatives for query {r.query!r}",
                                hint="lower train_group_size or add 'neg' passages")
            cols["query"].append(r.query)
            cols["pos"].append(p)
            for j, n in enumerate(negs):
                cols[f"neg_{j}"].append(n)
    return cols


def eval_corpus(items: list[EvalItem]) -> tuple[list[str], list[set[int]]]:
    """Unique passages of an eval set and, per query, the ids of its relevant passages."""
    ids: dict[str, int] = {}
    relevant = []
    for it in items:
        rel = set()
        for text in it.corpus:
            rel.add(ids.setdefault(text, len(ids)))
        relevant.append(rel)
    return list(ids), relevant
