"""Synthetic span-extraction data for the fine-tuning tests (generated, never copied from a data set)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

LETTERS = "ABCDEFGH"
FILLER = ["pump", "valve", "north", "station", "filter"]


def span_item(rng: random.Random) -> dict:
    """A short passage with a 1-letter code; the answer is that code, copied from the passage."""
    code = "".join(rng.choice(LETTERS) for _ in range(1))
    before = " ".join(rng.choice(FILLER) for _ in range(rng.randint(1, 3)))
    return {"instruction": f"{before} serial {code}\nserial?", "input": "", "output": code}


def span_items(n: int, seed: int) -> list[dict]:
    """``n`` distinct items (training data with duplicate conversations is rejected by the validator)."""
    rng = random.Random(seed)
    items: dict[str, dict] = {}
    while len(items) < n:
        item = span_item(rng)
        items.setdefault(item["instruction"], item)
    return list(items.values())


def write_json(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core box: one thread is ~30x faster than two fighting for cores."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def span_train(tmp_path) -> Path:
    return write_json(tmp_path / "train.json", span_items(48, seed=1))
