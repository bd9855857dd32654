import json

import pytest

from ragtune.cli import main
from ragtune.core.errors import ConfigError, DataError
from ragtune.data import DEFAULT_INSTRUCTION, embed_pairs, split_indices
from ragtune.data.embed_pairs import one_line, sample_negatives

from .helpers import read_jsonl, write_json


def qa_rows(n=60):
    rows = [{"question": f"What does unit {i} do?", "context": f"Unit {i} pumps water\nat {i} bar.", "id": i}
            for i in range(n)]
    # the same passage text under several rows: must never become a negative of any of them
    for i in (1, 2, 3):
        rows[i]["context"] = "Shared passage about filters."
    rows.append({"question": "", "context": "orphan passage"})          # rejected: empty query
    rows.append(dict(rows[10]))                                          # rejected: exact repeat
    return rows


def test_outputs_and_shapes(tmp_path):
    src = write_json(tmp_path / "qa.json", qa_rows())
    summary = embed_pairs(src, tmp_path / "out", neg_num=5, test_size=0.1, seed=7)
    train = read_jsonl(tmp_path / "out" / "train.jsonl")
    evals = read_jsonl(tmp_path / "out" / "eval.jsonl")
    kb = (tmp_path / "out" / "kb" / "knowledge_base.txt").read_text(encoding="utf-8").splitlines()
    assert summary.records_in == 62
    assert summary.rejected == {"empty query or passage": 1, "duplicate (query, passage) pair": 1}
    assert summary.examples["duplicate (query, passage) pair"] == ["record 61 = record 10"]
    assert len(train) == 54 and len(evals) == 6          # ceil(60 * 0.1) eval rows
    for row in train:
        assert set(row) == {"query", "pos", "neg", "prompt"} and row["prompt"] == DEFAULT_INSTRUCTION
        assert len(row["pos"]) == 1 and len(row["neg"]) == 5 and len(set(row["neg"])) == 5
    for row in evals:
        assert set(row) == {"query", "corpus"} and all("\n" not in p for p in row["corpus"])
    eval_passages = list(dict.fromkeys(p for r in evals for p in r["corpus"]))
    # kb: all (default): the eval passages first, then every training passage (distractors)
    assert kb == list(dict.fromkeys(eval_passages + [one_line(r["pos"][0]) for r in train]))   # one passage per line
    assert len(kb) == summary.notes["kb passages"] > len(eval_passages)
    assert summary.notes["kb"] == f"all: {len(eval_passages)} eval passages + {len(kb) - len(eval_passages)} others"
    embed_pairs(src, tmp_path / "out_eval", neg_num=5, test_size=0.1, seed=7, kb="eval")
    kb_eval = (tmp_path / "out_eval" / "kb" / "knowledge_base.txt").read_text(encoding="utf-8").splitlines()
    assert kb_eval == eval_passages
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["records_out"] == 60


def test_negatives_never_contain_the_positive_or_its_duplicates(tmp_path):
    src = write_json(tmp_path / "qa.json", qa_rows())
    embed_pairs(src, tmp_path / "out", neg_num=20, test_size=5, seed=3)
    train = read_jsonl(tmp_path / "out" / "train.jsonl")
    train_passages = {r["pos"][0] for r in train}
    for row in train:
        assert row["pos"][0] not in row["neg"]
        assert set(row["neg"]) <= train_passages          # negatives come from the training split only
    shared = [r for r in train if r["pos"][0] == "Shared passage about filters."]
    assert shared and all("Shared passage about filters." not in r["neg"] for r in shared)


def test_sample_negatives_exhaustive_small_pool():
    pool = ["a", "b", "c", "a"]
    negs = sample_negatives(["a", "b", "c"], pool, 2, seed=0)
    assert [sorted(n) for n in negs] == [["b", "c"], ["a", "c"], ["a", "b"]]
    with pytest.raises(DataError, match="neg-num"):
        sample_negatives(["a"], pool, 3, seed=0)


def test_split_is_reproducible_per_seed(tmp_path):
    assert split_indices(100, 0.1, 1314) == split_indices(100, 0.1, 1314)
    assert split_indices(100, 0.1, 1314) != split_indices(100, 0.1, 1315)
    train, test = split_indices(100, 0.1, 1314)
    assert len(test) == 10 and sorted(train + test) == list(range(100))
    src = write_json(tmp_path / "qa.json", qa_rows())
    for name in ("a", "b"):
        embed_pairs(src, tmp_path / name, neg_num=3, seed=11)
    for f in ("train.jsonl", "eval.jsonl", "kb/knowledge_base.txt"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    embed_pairs(src, tmp_path / "c", neg_num=3, seed=12)
    assert (tmp_path / "c" / "eval.jsonl").read_bytes() != (tmp_path / "a" / "eval.jsonl").read_bytes()
    with pytest.raises(DataError, match="test_size"):
        split_indices(5, 0.0, 1)


def test_errors_name_file_record_and_column(tmp_path):
    src = write_json(tmp_path / "qa.json", [{"q": "x", "context": "y"}])
    with pytest.raises(DataError, match=r"qa.json, record 0, field 'question'"):
        embed_pairs(src, tmp_path / "out")
    with pytest.raises(ConfigError, match="neg_num"):
        embed_pairs(src, tmp_path / "out", neg_num="many")


def test_cli_embed_pairs_custom_columns(tmp_path, capsys):
    rows = [{"q": f"query {i}", "passage": f"passage {i}"} for i in range(30)]
    src = write_json(tmp_path / "qa.json", rows)
    assert main(["data", "embed-pairs", str(src), str(tmp_path / "out"), "--query-col", "q", "--pos-col", "passage",
                 "--neg-num", "4", "--test-size", "0.2", "--seed", "5", "--instruction", "Q: "]) == 0
    assert "train rows: 24" in capsys.readouterr().out
    train = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert train[0]["prompt"] == "Q: " and len(train[0]["neg"]) == 4
    cfg = tmp_path / "c.yaml"
    cfg.write_text("query_col: q\npos_col: passage\nneg_num: 2\n")
    assert main(["data", "embed-pairs", str(src), str(tmp_path / "o2"), "--config", str(cfg)]) == 0
    assert len(read_jsonl(tmp_path / "o2" / "train.jsonl")[0]["neg"]) == 2
    cfg.write_text("query_column: q\n")
    assert main(["data", "embed-pairs", str(src), str(tmp_path / "o3"), "--config", str(cfg)]) == 1
