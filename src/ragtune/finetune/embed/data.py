"""Embedding fine-tune data: the held-out split, the query instruction and the training columns.

The files are read by :mod:`ragtune.data.embed_sets` (the one reader every command uses).
"""
from __future__ import annotations

import random

from ...core.errors import DataError
from ...data.embed_sets import RetrievalItem, TrainRecord


def split_train(records: list[TrainRecord], share: float, seed: int) -> tuple[list[TrainRecord], list[RetrievalItem]]:
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
    evals = [RetrievalItem(records[i].query, list(records[i].pos)) for i in sorted(held)]
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
