"""Embedding fine-tune on a tiny BERT: real training steps, real files, real metrics."""
from __future__ import annotations

import json

import pytest

from ragtune.core.errors import ConfigError, DataError
from ragtune.data.embed_sets import load_train
from ragtune.finetune.embed import EmbedFinetuneConfig, embedding, finetune_embedding
from ragtune.finetune.embed.data import training_rows

from .synth import make_task


@pytest.fixture(scope="module")
def tuned(tiny_embedder_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embed_ft")
    train, evalf = make_task(tmp)
    res = finetune_embedding(base=str(tiny_embedder_dir), train=str(train), eval_file=str(evalf),
                             output=str(tmp / "out"), num_train_epochs=5, learning_rate=1e-3,
                             per_device_train_batch_size=16, dtype="fp32", logging_steps=5, eval_corpus="eval")
    return res, tmp


def test_finetune_improves_heldout_recall(tuned):
    res, _ = tuned
    assert res.base["n_queries"] == 40
    # random tiny model: near chance (1/40); the learned word mapping lifts it well above
    assert res.base["recall@1"] < 0.1
    assert res.tuned["recall@1"] >= res.base["recall@1"] + 0.1
    assert res.tuned["mrr@10"] > res.base["mrr@10"]
    losses = [loss for _, loss in res.metrics["loss_history"]]
    assert losses[-1] < losses[0]


def test_outputs_metrics_and_reports(tuned):
    res, _ = tuned
    out = res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tuned"]["recall@1"] == pytest.approx(res.tuned["recall@1"])
    assert set(metrics["base"]) >= {"recall@1", "recall@10", "mrr@10", "ndcg@10"}
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    assert "| recall@1 |" in (out / "metrics.md").read_text()
    assert "num_train_epochs: 5" in (out / "ragtune_config.yaml").read_text()
    assert not list(out.parent.glob(".out.tmp-*")) and not (out / "trainer").exists()


def test_query_instruction_saved_and_applied_to_queries_only(tuned):
    from sentence_transformers import SentenceTransformer

    from ragtune.models.embedder import as_embedder

    res, _ = tuned
    cfg = json.loads((res.output / "config_sentence_transformers.json").read_text())
    assert cfg["prompts"]["query"] == "find: "          # from the records' 'prompt' field
    assert cfg.get("default_prompt_name") is None        # so documents stay raw
    raw = SentenceTransformer(str(res.output), device="cpu")
    emb = as_embedder(str(res.output))
    q = emb.embed_queries(["pump valve"])[0]
    d = emb.embed_documents(["pump valve"])[0]
    with_prompt = raw.encode(["find: pump valve"], prompt_name=None, normalize_embeddings=True)[0]
    without = raw.encode(["pump valve"], prompt_name=None, normalize_embeddings=True)[0]
    assert q == pytest.approx(with_prompt, abs=1e-5)
    assert d == pytest.approx(without, abs=1e-5)
    assert abs(float(q @ d)) < 0.9999


def test_split_from_train_when_no_eval_file(tiny_embedder_dir, tmp_path):
    train, _ = make_task(tmp_path, n_train=40, n_eval=1)
    res = embedding.run(base=str(tiny_embedder_dir), train=str(train), output=str(tmp_path / "o"),
                    eval_split=0.25, num_train_epochs=1, per_device_train_batch_size=8, dtype="fp32",
                    query_instruction="")
    assert res.metrics["eval_queries"] == 10 and res.metrics["train_records"] == 30
    assert "query" not in json.loads((res.output / "config_sentence_transformers.json").read_text())["prompts"]


def test_training_rows_fill_negatives_and_never_use_own_positive(tmp_path):
    f = tmp_path / "t.json"
    f.write_text(json.dumps([{"query": f"q{i}", "pos": [f"p{i}"], "neg": [f"p{(i + 1) % 5}"]} for i in range(5)]))
    cols = training_rows(load_train(f), n_neg=3, seed=0)
    assert list(cols) == ["query", "pos", "neg_0", "neg_1", "neg_2"]
    for i in range(5):
        negs = [cols[f"neg_{j}"][i] for j in range(3)]
        assert cols["pos"][i] not in negs and len(set(negs)) == 3
        assert negs[0] == f"p{(i + 1) % 5}"           # given negatives come first


@pytest.mark.parametrize("row,field", [({"pos": ["p"]}, "query"), ({"query": "q"}, "pos"),
                                       ({"query": "q", "pos": [1]}, "pos"), ({"query": "q", "pos": ["p"], "prompt": 3}, "prompt")])
def test_bad_records_name_file_record_field(tmp_path, row, field):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"query": "ok", "pos": ["fine"]}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError) as err:
        load_train(f)
    assert "bad.jsonl" in err.value.message and "record 1" in err.value.message and f"'{field}'" in err.value.message


def test_config_rejects_unknown_and_bad_values():
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        EmbedFinetuneConfig.build(train="t", output="o", learnin_rate=1)
    with pytest.raises(ConfigError, match="temperature"):
        EmbedFinetuneConfig.build(train="t", output="o", temperature=0)


def test_cli_runs_and_prints_metrics(tiny_embedder_dir, tmp_path, capsys):
    from ragtune.cli import main

    train, evalf = make_task(tmp_path, n_train=32, n_eval=8)
    rc = main(["finetune", "embed", "--base", str(tiny_embedder_dir), "--train", str(train), "--output",
               str(tmp_path / "cli_out"), "--eval-file", str(evalf), "--num-train-epochs", "1",
               "--per-device-train-batch-size", "8", "--dtype", "fp32", "--eval-ks", "1,5"])
    assert rc == 0
    out = capsys.readouterr().out
    printed = json.loads(out[out.index('{\n  "output"'):])  # the trainer prints its loss dicts before
    assert printed["tuned"]["n_queries"] == 8 and "recall@5" in printed["base"]
    rc = main(["finetune", "embed", "--train", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "x")])
    assert rc == 1 and "missing.jsonl" in capsys.readouterr().err


def test_queries_cut_to_query_max_len_with_instruction(tiny_embedder_dir):
    from transformers import AutoTokenizer

    from ragtune.finetune.embed.st_backend import truncate_queries

    tok = AutoTokenizer.from_pretrained(str(tiny_embedder_dir))
    long_q = " ".join(["pump valve filter"] * 20)
    short, cut = truncate_queries(tok, ["pump valve", long_q], max_len=12, instruction="find: ")
    assert short == "pump valve"
    assert long_q.startswith(cut) and len(tok("find: " + cut)["input_ids"]) <= 12
    assert len(tok("find: " + cut)["input_ids"]) >= 11        # uses the budget, not much less
