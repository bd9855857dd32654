"""ragtune's embedding trainer: the micro-batched step computes the full batch's math, batches hold
no repeated text, dev evaluation keeps the best weights, the time budget re-plans, Ctrl-C keeps
the weights, and a tuned model below its base is flagged."""
from __future__ import annotations

import json
import random

import pytest

from ragtune.finetune.embed import EmbedFinetuneConfig, finetune_embedding
from ragtune.finetune.embed import fast_backend as fb
from ragtune.finetune.embed.data import training_rows
from ragtune.finetune.embed.evaluate import comparison_markdown, regressions

from .synth import make_task

TEXTS = ["pump", "valve model serial filter replace months", "hours pressure bar north station " * 6,
         "paragraph question", "answer original pump valve model serial " * 3, "filter"]


@pytest.fixture
def model(tiny_embedder_dir):
    from ragtune.models.loading import load_sentence_transformer

    return load_sentence_transformer(str(tiny_embedder_dir))


def test_micro_batches_cover_every_text_once_and_respect_the_budget():
    rng = random.Random(0)
    lengths = [rng.randint(5, 256) for _ in range(200)]
    groups = fb.micro_batches(list(range(200)), lengths, budget=1024)
    assert sorted(i for g in groups for i in g) == list(range(200))
    for g in groups:
        assert len(g) == 1 or len(g) * max(lengths[i] for i in g) <= 1024
    padded = sum(len(g) * max(lengths[i] for i in g) for g in groups)
    assert padded < 1.2 * sum(lengths) < 200 * max(lengths)    # far below padding all to the longest


def test_batches_never_repeat_a_text_and_use_every_row_once():
    cols = {"query": [f"q{i % 30}" for i in range(60)], "pos": [f"p{i % 25}" for i in range(60)],
            "neg_0": [f"p{(i + 7) % 25}" for i in range(60)]}
    rows = fb.TrainRows(texts=[], lengths=[], queries=[int(q[1:]) for q in cols["query"]],
                        positives=[100 + int(p[1:]) for p in cols["pos"]],
                        negatives=[[100 + int(n[1:])] for n in cols["neg_0"]])
    batches = fb.batches_without_duplicates(rows, 8, random.Random(1))
    assert sorted(r for b in batches for r in b) == list(range(60))
    for b in batches:
        texts = [t for r in b for t in (rows.queries[r], rows.positives[r], *rows.negatives[r])]
        assert len(texts) == len(set(texts))


def test_micro_batched_encoding_equals_the_library_encoding(model, monkeypatch):
    """Same vectors as SentenceTransformer.encode_query / encode_document, prompt included."""
    import numpy as np
    import torch

    monkeypatch.setattr(fb, "MICRO_BATCH_TOKENS", 24)   # force several micro-batches
    model.eval()
    enc = fb.Encoder(model, query_max_len=16, passage_max_len=64, instruction="find: ")
    q_len = fb.token_lengths(model, TEXTS, 16, "find: ")
    p_len = fb.token_lengths(model, TEXTS, 64)
    assert len(fb.micro_batches(list(range(len(TEXTS))), p_len)) > 2
    with torch.no_grad():
        q = torch.nn.functional.normalize(enc.encode(TEXTS, q_len, query=True), dim=-1).numpy()
        p = torch.nn.functional.normalize(enc.encode(TEXTS, p_len, query=False), dim=-1).numpy()
    model.max_seq_length = 16
    ref_q = model.encode(TEXTS, prompt="find: ", normalize_embeddings=True)
    model.max_seq_length = 64
    ref_p = model.encode(TEXTS, normalize_embeddings=True)
    assert np.abs(q - ref_q).max() < 1e-5 and np.abs(p - ref_p).max() < 1e-5
    assert np.abs(q - p).max() > 1e-3                    # the instruction changes the query vectors


def test_micro_batched_gradient_equals_the_padded_batch_gradient(model, monkeypatch):
    """Only padding is saved: the loss and every parameter's gradient match one padded batch."""
    import torch

    model.eval()   # no dropout, so both passes compute the same function
    enc = fb.Encoder(model, 16, 64, "")

    def grads(budget: int):
        monkeypatch.setattr(fb, "MICRO_BATCH_TOKENS", budget)
        model.zero_grad()
        lens = fb.token_lengths(model, TEXTS, 64)
        q = enc.encode(TEXTS[:3], lens[:3], query=True)
        p = enc.encode(TEXTS[3:] + TEXTS[:3], lens[3:] + lens[:3], query=False)
        loss = fb.contrastive_loss(q, p, 20.0, None)
        loss.backward()
        return float(loss), {n: t.grad.clone() for n, t in model.named_parameters() if t.grad is not None}

    loss_a, g_a = grads(10_000)     # one batch padded to its longest text
    loss_b, g_b = grads(16)         # one text per micro-batch
    assert loss_a == pytest.approx(loss_b, abs=1e-5)
    assert g_a.keys() == g_b.keys() and len(g_a) > 10
    for name in g_a:
        assert torch.allclose(g_a[name], g_b[name], atol=1e-5), name


def test_matryoshka_loss_is_the_mean_over_prefixes():
    import torch

    torch.manual_seed(0)
    q, p = torch.randn(4, 32), torch.randn(8, 32)
    each = [fb.contrastive_loss(q, p, 20.0, [d]) for d in (32, 16, 8)]
    assert float(fb.contrastive_loss(q, p, 20.0, [32, 16, 8])) == pytest.approx(float(sum(each) / 3), rel=1e-6)
    assert float(fb.contrastive_loss(q, p, 20.0, None)) == pytest.approx(float(each[0]), rel=1e-6)


@pytest.mark.parametrize("trainer", ["ragtune", "sentence_transformers"])
def test_both_trainers_lift_heldout_recall(tiny_embedder_dir, tmp_path, trainer):
    train, evalf = make_task(tmp_path)
    res = finetune_embedding(base=str(tiny_embedder_dir), train=str(train), eval_file=str(evalf),
                             output=str(tmp_path / "out"), num_train_epochs=5, learning_rate=1e-3,
                             per_device_train_batch_size=16, trainer=trainer, eval_corpus="eval")
    assert res.metrics["trainer"] == trainer
    assert res.tuned["recall@1"] >= res.base["recall@1"] + 0.1
    assert res.tuned["ndcg@10"] > res.base["ndcg@10"]


def test_dev_evaluation_keeps_the_best_weights(tiny_embedder_dir, tmp_path):
    train, evalf = make_task(tmp_path)
    res = finetune_embedding(base=str(tiny_embedder_dir), train=str(train), eval_file=str(evalf),
                             output=str(tmp_path / "out"), num_train_epochs=6, learning_rate=1e-3,
                             per_device_train_batch_size=16, eval_steps=10, eval_metric="mrr@10",
                             eval_corpus="eval", dev_queries=1000)
    dev = res.metrics["dev"]
    steps = [h["step"] for h in dev["history"]]
    assert steps[:3] == [10, 20, 30] and steps[-1] == res.metrics["steps"]
    assert dev["best_value"] == max(h["mrr@10"] for h in dev["history"])
    # the dev slice is the whole eval set here (no distractors), so the saved model scores the best value
    assert res.tuned["mrr@10"] == pytest.approx(dev["best_value"], abs=1e-6)
    saved = json.loads((res.output / "metrics.json").read_text())
    assert saved["dev"]["best_step"] == dev["best_step"] and saved["examples_per_second"] > 0


def test_eval_corpus_all_adds_the_training_passages_and_tiny_eval_sets_warn(tiny_embedder_dir, tmp_path, caplog):
    train, evalf = make_task(tmp_path, n_train=60, n_eval=10)
    train_passages = {p for line in train.read_text().splitlines() for r in [json.loads(line)]
                      for p in r["pos"] + r["neg"]}
    eval_passages = {json.loads(line)["corpus"][0] for line in evalf.read_text().splitlines()}
    with caplog.at_level("WARNING"):
        res = finetune_embedding(base=str(tiny_embedder_dir), train=str(train), eval_file=str(evalf),
                                 output=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=8)
    assert res.base["n_corpus"] == len(train_passages | eval_passages)
    assert res.base["n_distractors"] == len(train_passages - eval_passages)
    assert "only 10 held-out queries" in caplog.text
    assert f"({res.base['n_distractors']} of them relevant to no held-out query)" in (res.output / "metrics.md").read_text()


def test_time_budget_replans_the_step_count(tiny_embedder_dir, tmp_path):
    train, evalf = make_task(tmp_path)
    res = finetune_embedding(base=str(tiny_embedder_dir), train=str(train), eval_file=str(evalf),
                             output=str(tmp_path / "out"), num_train_epochs=500, per_device_train_batch_size=16,
                             time_budget_minutes=0.05, eval_corpus="eval")
    plans = res.metrics["time_budget"]["plans"]
    assert plans[0]["at_step"] == 10 and plans[0]["planned_steps"] < 500 * 10
    assert res.metrics["steps"] == plans[-1]["planned_steps"] < 500 * 10


def test_ctrl_c_keeps_the_weights_so_far(tiny_embedder_dir, tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    train, evalf = make_task(tmp_path)
    calls = {"n": 0}
    real = fb.contrastive_loss

    def interrupted_at_step_3(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(fb, "contrastive_loss", interrupted_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        finetune_embedding(base=str(tiny_embedder_dir), train=str(train), eval_file=str(evalf),
                           output=str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=16)
    assert not (tmp_path / "out").exists()
    SentenceTransformer(str(tmp_path / "out.interrupted"), device="cpu").encode(["pump valve"])


def test_a_tuned_model_below_its_base_is_flagged():
    base = {"recall@1": 0.5, "ndcg@10": 0.6, "n_queries": 3, "n_corpus": 9, "n_distractors": 6}
    tuned = {"recall@1": 0.4, "ndcg@10": 0.7, "n_queries": 3, "n_corpus": 9, "n_distractors": 6}
    assert regressions(base, tuned, ["recall@1", "ndcg@10"]) == ["recall@1"]
    md = comparison_markdown(base, tuned, [1, 10])
    assert "below its base on: recall@1" in md
    assert md.index("ndcg@10") < md.index("recall@1")       # reports lead with nDCG@10


def test_config_rejects_bad_eval_metric_and_dims():
    from ragtune.core.errors import ConfigError

    with pytest.raises(ConfigError, match="eval_metric"):
        EmbedFinetuneConfig.build(train="t", output="o", eval_metric="accuracy")
    with pytest.raises(ConfigError, match="matryoshka_dims"):
        EmbedFinetuneConfig.build(train="t", output="o", matryoshka_dims=[0])
    with pytest.raises(ConfigError, match="eval_steps, dropout: only ragtune's trainer"):
        EmbedFinetuneConfig.build(train="t", output="o", trainer="sentence_transformers", eval_steps=5, dropout=False)
    with pytest.raises(ConfigError, match="time_budget_minutes: only ragtune's trainer"):
        EmbedFinetuneConfig.build(train="t", output="o", method="flagembedding", time_budget_minutes=3)
    cols = training_rows([], 1, 0)
    assert cols["query"] == []
