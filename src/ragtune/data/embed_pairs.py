"""``ragtune data embed-pairs``: question/passage rows -> an embedding training set, an eval set and a
knowledge base (the FlagEmbedding layout of the chapter's financial-QA experiment).

Outputs in OUTDIR:
- ``train.jsonl``: ``{"query", "pos": [passage], "neg": [passage x neg_num], "prompt": instruction}``
- ``eval.jsonl``: ``{"query", "corpus": [passage, ...]}`` (rows of the held-out split; the same
  query asked twice has its passages merged)
- ``kb/knowledge_base.txt``: one passage per line: with ``kb: all`` (default) every distinct passage
  of the input (eval and training ones: retrieval has to find the right passage among all of
  them, as in a real knowledge base); with ``kb: eval`` only the eval passages (the chapter's
  set-up, which makes any retriever look better on small sets).
- ``summary.json``: counts.
Passages written to eval.jsonl and the knowledge base have line breaks replaced by spaces (and
whitespace runs collapsed), so one line is one passage and an eval passage matches its KB line.

Differences from the chapter's script, on purpose: the split happens first and negatives come from
the training split only (eval passages never leak into training), and a negative is never the row's
own positive nor any passage with the same text (the chapter only excludes the row's own index, so
duplicated passages could be sampled as negatives of themselves).
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from ..core.config import Config
from ..core.errors import DataError
from ..core.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from .readers import read_rows
from .summary import Summary

DEFAULT_INSTRUCTION = "Represent this sentence for searching relevant passages: "
_WS = re.compile(r"\s+")


class EmbedPairsConfig(Config):
    query_col: str = Field("question", description="Column holding the query.")
    pos_col: str = Field("context", description="Column holding the positive passage.")
    neg_num: int = Field(10, ge=0, description="Random negatives per training row.")
    test_size: float = Field(0.1, description="Eval split: a fraction in (0,1) or a row count >= 1.")
    seed: int = Field(1314, description="Seed of the split and of negative sampling.")
    instruction: str = Field(DEFAULT_INSTRUCTION, description="Query instruction stored as 'prompt'.")
    kb: Literal["all", "eval"] = Field(
        "all", description="Knowledge base: all passages (eval + training: realistic) or eval (the eval passages only).")


def one_line(text: str) -> str:
    """A passage as one line: newlines (and any whitespace run) become one space."""
    return _WS.sub(" ", text).strip()


def split_indices(n: int, test_size: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded shuffle, then the first ceil(n * test_size) rows are the test split (a float in
    (0, 1)) or exactly ``test_size`` rows (an integer >= 1)."""
    import numpy as np

    if test_size <= 0:
        raise DataError(f"test_size must be > 0, got {test_size}")
    n_test = int(test_size) if test_size >= 1 else math.ceil(n * test_size)
    if not 0 < n_test < n:
        raise DataError(f"test_size={test_size} leaves {n_test} test rows out of {n}; need at least one "
                        "row in each split")
    order = np.random.default_rng(seed).permutation(n).tolist()
    return sorted(order[n_test:]), sorted(order[:n_test])


def sample_negatives(positives: list[str], pool: list[str], neg_num: int, seed: int) -> list[list[str]]:
    """For each positive, ``neg_num`` distinct passages from ``pool`` whose text differs from it."""
    import numpy as np

    distinct = list(dict.fromkeys(pool))
    if len(distinct) - 1 < neg_num:
        raise DataError(f"neg_num={neg_num} but the training split has only {len(distinct)} distinct passages",
                        hint="lower --neg-num")
    rng = np.random.default_rng(seed)
    out = []
    for pos in positives:
        chosen: list[str] = []
        while len(chosen) < neg_num:
            for i in rng.choice(len(distinct), size=min(len(distinct), neg_num + 2), replace=False):
                text = distinct[int(i)]
                if text.strip() != pos.strip() and text not in chosen:
                    chosen.append(text)
                    if len(chosen) == neg_num:
                        break
        out.append(chosen)
    return out


def embed_pairs(path: str | os.PathLike, outdir: str | os.PathLike, config: EmbedPairsConfig | None = None,
                **kwargs) -> Summary:
    cfg = config or EmbedPairsConfig.build(**kwargs)
    file, outdir = str(path), Path(outdir)
    summary = Summary("embed-pairs", file, str(outdir))
    records = read_rows(path)
    summary.records_in = len(records)
    queries, passages = [], []
    seen: dict[tuple[str, str], str] = {}
    for r in records:
        for col in (cfg.query_col, cfg.pos_col):
            if col not in r.data:
                raise DataError(f"column not found; the row has {sorted(r.data)}", file=file, record=r.index,
                                field=col, hint="choose columns with --query-col / --pos-col")
        q, p = r.data[cfg.query_col], r.data[cfg.pos_col]
        for col, value in ((cfg.query_col, q), (cfg.pos_col, p)):
            if value is not None and not isinstance(value, str):
                raise DataError(f"must be a string, got {type(value).__name__}", file=file, record=r.index, field=col)
        if not (q or "").strip() or not (p or "").strip():
            summary.reject("empty query or passage", r.where)
            continue
        # An exact repeat of a (query, passage) pair could land in both splits and leak eval into train.
        key = (q.strip(), p.strip())
        if key in seen:
            summary.reject("duplicate (query, passage) pair", f"{r.where} = {seen[key]}")
            continue
        seen[key] = r.where
        queries.append(q.strip())
        passages.append(p)
    train_idx, test_idx = split_indices(len(queries), cfg.test_size, cfg.seed)
    negatives = sample_negatives([passages[i] for i in train_idx], [passages[i] for i in train_idx],
                                 cfg.neg_num, cfg.seed)
    train = [{"query": queries[i], "pos": [passages[i]], "neg": neg, "prompt": cfg.instruction}
             for i, neg in zip(train_idx, negatives)]
    eval_rows: dict[str, list[str]] = {}
    for i in test_idx:
        corpus = eval_rows.setdefault(queries[i], [])
        if one_line(passages[i]) not in corpus:
            corpus.append(one_line(passages[i]))
    evalset = [{"query": q, "corpus": c} for q, c in eval_rows.items()]
    kb = list(dict.fromkeys(p for row in evalset for p in row["corpus"]))
    n_eval_passages = len(kb)
    if cfg.kb == "all":
        kb = list(dict.fromkeys([*kb, *(one_line(passages[i]) for i in train_idx)]))
    atomic_write_jsonl(outdir / "train.jsonl", train)
    atomic_write_jsonl(outdir / "eval.jsonl", evalset)
    atomic_write_text(outdir / "kb" / "knowledge_base.txt", "\n".join(kb) + "\n")
    summary.records_out = len(train) + len(test_idx)
    summary.notes.update({"train rows": len(train), "eval rows": len(test_idx),
                          "eval queries (merged)": len(evalset), "kb passages": len(kb),
                          "kb": f"{cfg.kb}: {n_eval_passages} eval passages + {len(kb) - n_eval_passages} others",
                          "negatives per row": cfg.neg_num, "config": cfg.to_dict()})
    atomic_write_json(outdir / "summary.json", summary.to_dict())
    return summary
