"""A synthetic retrieval task a random tiny embedder cannot solve but can learn: queries use one
set of words, passages a fixed permutation of them (a private 'synonym' code), so matching needs
the learned mapping, not token overlap."""
from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

WORDS = ["pump", "valve", "model", "serial", "filter", "replace", "months", "hours", "pressure", "bar",
         "north", "station", "paragraph", "question", "answer", "original"]


def make_task(tmp: Path, n_train: int = 160, n_eval: int = 40, seed: int = 0, prompt: str | None = "find: ") -> tuple[Path, Path]:
    rng = random.Random(seed)
    code = dict(zip(WORDS, rng.sample(WORDS, len(WORDS))))
    pairs = list(itertools.permutations(WORDS, 2))
    rng.shuffle(pairs)
    pairs = pairs[: n_train + n_eval]

    def passage(a, b):
        return f"{code[a]} {code[b]} {code[a]}"

    train, evals = pairs[:n_train], pairs[n_train:]
    passages = [passage(a, b) for a, b in pairs]
    rows = []
    for a, b in train:
        row = {"query": f"{a} {b}", "pos": [passage(a, b)],
               "neg": [p for p in rng.sample(passages, 3) if p != passage(a, b)][:2]}
        if prompt is not None:
            row["prompt"] = prompt
        rows.append(row)
    train_path, eval_path = tmp / "train.jsonl", tmp / "eval.jsonl"
    train_path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    eval_path.write_text("\n".join(json.dumps({"query": f"{a} {b}", "corpus": [passage(a, b)]}) for a, b in evals) + "\n")
    return train_path, eval_path
