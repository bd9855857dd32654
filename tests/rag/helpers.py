"""A deterministic bag-of-words embedder: a real callable embedder (users may pass any callable),
so retriever tests check ordering/cut-off against hand-computable cosines."""
from __future__ import annotations

import re

import numpy as np

VOCAB = ["pump", "valve", "filter", "pressure", "bar", "station", "north", "hours", "months", "oil"]


class BowEmbedder:
    def __init__(self, weights=None):
        self.calls = 0
        self.texts_embedded = 0
        self.weights = np.ones(len(VOCAB)) if weights is None else np.asarray(weights, dtype=float)
        self.version = 0

    def __call__(self, texts):
        self.calls += 1
        self.texts_embedded += len(texts)
        out = []
        for t in texts:
            words = re.findall(r"\w+", t.lower())
            v = np.array([words.count(w) for w in VOCAB], dtype=float) * self.weights
            out.append(v + 1e-3)   # never a zero vector
        return np.stack(out)

    def fingerprint(self):
        return f"bow-{self.version}"
