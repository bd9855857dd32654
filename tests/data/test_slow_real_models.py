"""Slow: the real bundled embedder (all-MiniLM-L6-v2). Run with RAGTUNE_SLOW=1."""
import numpy as np
import pytest

from ragtune.data import embed_pairs, mine_negatives

from .helpers import read_jsonl, write_json

TOPICS = {
    "pump": ["The pump {i} moves water at {i} litres per minute.", "How fast does pump {i} move water?"],
    "filter": ["Replace filter {i} every {i} months to keep the air clean.", "When should filter {i} be replaced?"],
    "invoice": ["Invoice {i} is due within {i} days of delivery.", "When is invoice {i} due?"],
    "train": ["Train {i} leaves the north station at {i} o'clock.", "When does train {i} leave?"],
}


@pytest.mark.slow
def test_mined_negatives_are_harder_than_random(tmp_path):
    rows = [{"question": q.format(i=i), "context": p.format(i=i)}
            for i in range(1, 16) for p, q in TOPICS.values()]
    src = write_json(tmp_path / "qa.json", rows)
    embed_pairs(src, tmp_path / "pairs", neg_num=5, test_size=4, seed=0)
    summary = mine_negatives(tmp_path / "pairs" / "train.jsonl", tmp_path / "mined.jsonl",
                             model="all-MiniLM-L6-v2", range="1-30", margin=0.05, neg_num=5, seed=0)
    assert summary.records_out == 56
    from sentence_transformers import SentenceTransformer

    from ragtune.models import resolve_model

    model = SentenceTransformer(str(resolve_model("all-MiniLM-L6-v2").path), device="cpu")
    random_rows = read_jsonl(tmp_path / "pairs" / "train.jsonl")
    mined_rows = read_jsonl(tmp_path / "mined.jsonl")

    def mean_neg_sim(rows):
        sims = []
        for r in rows:
            q = model.encode([r["prompt"] + r["query"]], normalize_embeddings=True)[0]
            sims.extend(model.encode(r["neg"], normalize_embeddings=True) @ q)
        return float(np.mean(sims))

    assert mean_neg_sim(mined_rows) > mean_neg_sim(random_rows) + 0.05
    for r in mined_rows:
        assert not set(r["neg"]) & set(r["pos"])
