"""`ragtune eval retrieval`: context recall/relevance + recall@k/MRR, several embedders compared."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtune.eval.retrieval_eval import RetrievalEvalConfig, evaluate_retrieval

KB = ["the pump runs at 5 bar.", "replace the oil filter every month.", "the north station is closed.",
      "valve model serial is X1."]
EVAL = [("pump bar", ["the pump runs at 5 bar."]), ("oil filter", ["replace the oil filter every month."]),
        ("station north", ["the north station is closed."]), ("unrelated words", ["not in the kb at all."])]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "knowledge_base.txt").write_text("\n".join(KB) + "\n")
    ev = tmp_path / "eval.jsonl"
    ev.write_text("\n".join(json.dumps({"query": q, "corpus": c}) for q, c in EVAL) + "\n")
    return tmp_path, ev


def test_bm25_scores_are_exact(files):
    tmp, ev = files
    rep = evaluate_retrieval(RetrievalEvalConfig.build(evalset=str(ev), kb=str(tmp / "kb"), similarity="bm25",
                                                       topk=1, ks=[1, 5]))
    m = rep["models"][0]["metrics"]
    # three queries find their passage first; the fourth's reference is not in the KB at all
    assert m["recall@1"] == pytest.approx(0.75) and m["mrr@5"] == pytest.approx(0.75)
    assert m["context_recall"] == pytest.approx(0.75)
    assert m["n_queries"] == 4 and m["n_nodes"] == 4


def test_cli_compares_two_embedders_and_writes_reports(files, tiny_embedder_dir, capsys):
    from ragtune.cli import main

    tmp, ev = files
    out = tmp / "report"
    rc = main(["eval", "retrieval", "--evalset", str(ev), "--kb", str(tmp / "kb"), "--embed", str(tiny_embedder_dir),
               "--embed", str(tiny_embedder_dir), "--topk", "1", "--ks", "1,3", "--output", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "context_recall" in printed and printed.count("tiny-embedder") >= 2
    rep = json.loads((out / "retrieval.json").read_text())
    a, b = (m["metrics"] for m in rep["models"])
    assert a == b and 0 <= a["context_recall"] <= 1 and a["recall@3"] >= a["recall@1"]
    rows = [json.loads(line) for line in (out / "retrieved_0_tiny-embedder.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and len(rows[0]["context_retrieved"]) == 1 and rows[0]["context_reference"]
    assert (out / "retrieval.png").read_bytes()[:4] == b"\x89PNG"
    assert "topk: 1" in (out / "ragtune_config.yaml").read_text()
    # the per-embedder runs use the eval-run schema: `ragtune eval compare` reads them
    runs = sorted(str(p) for p in (out / "runs").iterdir())
    assert len(runs) == 2
    summary = json.loads((Path(runs[0]) / "summary.json").read_text())
    assert summary["metrics"]["recall@1"]["mean"] == pytest.approx(a["recall@1"])
    assert summary["metrics"]["context_recall"]["mean"] == pytest.approx(a["context_recall"])
    capsys.readouterr()
    assert main(["eval", "compare", *runs, "--output", str(tmp / "cmp")]) == 0
    assert "recall@1" in capsys.readouterr().out
    rc = main(["eval", "retrieval", "--evalset", str(tmp / "nope.jsonl"), "--kb", str(tmp / "kb")])
    assert rc == 1 and "nope.jsonl" in capsys.readouterr().err
