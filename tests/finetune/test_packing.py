"""Shared-context training: packed records give the loss and the gradients of the records trained
alone (fp32, a tiny Gemma-3 with a sliding-window layer), and the trainer uses it."""
from __future__ import annotations

import json
import random

import pytest

from .conftest import write_json

WORDS = ["pump", "valve", "north", "station", "filter", "serial", "model", "hours", "pressure", "bar"]


def shared_context_records(n_passages: int, questions: int, seed: int = 0, words: int = 60) -> list[dict]:
    """Passages of ``words`` words (longer than the tiny model's 64-token sliding window), each with
    several questions whose answers are words of the passage."""
    rng = random.Random(seed)
    rows = []
    for p in range(n_passages):
        passage = " ".join(rng.choice(WORDS) for _ in range(words)) + f" code {p}"
        for q in range(questions):
            answer = rng.choice(passage.split())
            rows.append({"instruction": f"Known paragraph: {passage}\nQuestion {q}: which word number {q}?",
                         "output": answer})
    return rows


def _samples(tiny_llm_dir, rows, cutoff=512):
    from transformers import AutoTokenizer

    from ragtune.core.prompt import PromptConfig
    from ragtune.data.formats import to_messages
    from ragtune.finetune.llm.data import tokenize_conversation

    tok = AutoTokenizer.from_pretrained(tiny_llm_dir)
    return tok, [tokenize_conversation(tok, to_messages(r), PromptConfig(), cutoff) for r in rows]


def test_packs_share_the_prefix_and_restart_positions(tiny_llm_dir):
    from ragtune.finetune.llm.packing import build_packs

    _, samples = _samples(tiny_llm_dir, shared_context_records(3, 4))
    packs = build_packs(samples, min_prefix=32)
    assert len(packs) == 3 and sorted(i for p in packs for i in p.members) == list(range(12))
    for p in packs:
        prefix = p.segments.count(0)
        assert prefix >= 32
        starts = [j for j in range(1, len(p)) if p.segments[j] != p.segments[j - 1] and p.segments[j] > 0]
        assert all(p.positions[j] == prefix for j in starts)           # every branch restarts at the prefix end
        assert sum(len(samples[i]) for i in p.members) - len(p) == prefix * (len(p.members) - 1)
    alone = build_packs(samples, min_prefix=10_000)                    # nothing shares that much
    assert len(alone) == 12 and all(len(p.members) == 1 for p in alone)


def test_packed_loss_and_gradients_equal_training_records_separately(tiny_llm_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from ragtune.finetune.llm.batching import collate
    from ragtune.finetune.llm.loss import answer_only_loss_sum
    from ragtune.finetune.llm.packing import build_packs, collate_packs, sliding_window_of

    tok, samples = _samples(tiny_llm_dir, shared_context_records(2, 3, seed=4, words=70))
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir, dtype=torch.float32, attn_implementation="eager")
    window = sliding_window_of(model)
    assert window == 64 and max(len(s) for s in samples) > window + 20   # the window really cuts in
    packs = build_packs(samples, min_prefix=32)
    assert any(len(p.members) > 1 for p in packs)

    def grads():
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    total, count = 0.0, 0
    for s in samples:
        ids, mask, labels = collate([s], tok.pad_token_id)
        loss, n = answer_only_loss_sum(model, ids, mask, labels)
        loss.backward()
        total, count = total + float(loss), count + n
    separate = grads()

    model.zero_grad()
    ids, masks, labels, pos = collate_packs(packs, tok.pad_token_id, torch.float32, window)
    assert isinstance(masks, dict) and set(masks) == {"full_attention", "sliding_attention"}
    loss, n = answer_only_loss_sum(model, ids, masks, labels, pos)
    loss.backward()
    packed = grads()

    assert n == count
    assert float(loss) == pytest.approx(total, rel=1e-5)
    assert set(packed) == set(separate)
    for name in separate:
        torch.testing.assert_close(packed[name], separate[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_wrong_window_is_caught(tiny_llm_dir):
    """The equality above is not vacuous: without the sliding window on position distances, the
    loss differs (the records are longer than the window)."""
    import torch
    from transformers import AutoModelForCausalLM

    from ragtune.finetune.llm.batching import collate
    from ragtune.finetune.llm.loss import answer_only_loss_sum
    from ragtune.finetune.llm.packing import build_packs, collate_packs

    tok, samples = _samples(tiny_llm_dir, shared_context_records(1, 3, seed=4, words=70))
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        alone = sum(float(answer_only_loss_sum(model, *collate([s], tok.pad_token_id))[0]) for s in samples)
        ids, masks, labels, pos = collate_packs(build_packs(samples, min_prefix=32), tok.pad_token_id,
                                                torch.float32, None)   # no sliding mask: full attention everywhere
        wrong = float(answer_only_loss_sum(model, ids, {"full_attention": masks, "sliding_attention": masks},
                                           labels, pos)[0])
    assert abs(wrong - alone) > 1e-3


def test_trainer_packs_and_reports_it(tiny_llm_dir, tmp_path):
    import ragtune as rt

    train = write_json(tmp_path / "t.json", shared_context_records(4, 3, seed=1, words=30))
    res = rt.finetune.lora.run(str(tiny_llm_dir), str(train), str(tmp_path / "out"), max_steps=2, dtype="fp32",
                               per_device_train_batch_size=2, cutoff_len=256)
    info = res.metrics["packing"]
    assert info["records"] == 12 and info["sequences"] == 4 and info["token_ratio"] > 1.5
    assert res.metrics["train_samples"] == 12 and res.metrics["records_per_second"] > 0
    off = rt.finetune.lora.run(str(tiny_llm_dir), str(train), str(tmp_path / "off"), max_steps=2, dtype="fp32",
                               per_device_train_batch_size=2, cutoff_len=256, pack_shared_prefix=False)
    assert off.metrics["packing"] is None and off.metrics["train_sequences"] == 12
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["packing"]["sequences"] == 4


def test_long_packs_are_split_into_smaller_micro_batches_with_the_same_training(tiny_llm_dir, tmp_path, monkeypatch):
    """Packs up to 2 x cutoff_len would need 4x an unpacked batch's attention memory; the trainer cuts
    such micro-batches (batching.split_by_attention_area) and must train exactly as without the cut."""
    import torch
    from safetensors.torch import load_file

    import ragtune as rt
    from ragtune.finetune.llm import batching

    train = write_json(tmp_path / "t.json", shared_context_records(4, 4, seed=2, words=20))
    calls: list[list[list[int]]] = []
    real = batching.split_by_attention_area

    def spy(micro, lengths, max_area):
        chunks = real(micro, lengths, max_area)
        calls.append(chunks)
        return chunks

    def run(name):
        rt.finetune.lora.run(str(tiny_llm_dir), str(train), str(tmp_path / name), max_steps=2, dtype="fp32",
                             per_device_train_batch_size=2, cutoff_len=160, pack_max_len=640, merge=False)
        return load_file(str(tmp_path / name / "adapter" / "adapter_model.safetensors"))

    monkeypatch.setattr(batching, "split_by_attention_area", spy)
    split = run("split")
    assert any(len(chunks) > 1 for chunks in calls)          # packs longer than cutoff_len were cut
    monkeypatch.setattr(batching, "split_by_attention_area", lambda micro, lengths, max_area: [list(micro)])
    whole = run("whole")
    assert set(split) == set(whole)
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], rtol=1e-4, atol=1e-6, msg=name)


def test_prompt_groups_are_the_passages(tiny_llm_dir):
    from ragtune.finetune.llm.data import prompt_groups

    rows = shared_context_records(5, 3, seed=2, words=30)
    _, samples = _samples(tiny_llm_dir, rows)
    groups = prompt_groups(samples)
    passage = [r["instruction"].split("\nQuestion")[0] for r in rows]
    assert len(set(groups)) == 5
    assert all((groups[i] == groups[j]) == (passage[i] == passage[j]) for i in range(15) for j in range(15))


def test_val_split_holds_out_whole_passages(tiny_llm_dir):
    from ragtune.finetune.llm.data import held_out_indices, validation_indices

    rows = shared_context_records(10, 4, seed=3, words=30)
    _, samples = _samples(tiny_llm_dir, rows)
    passage = [r["instruction"].split("\nQuestion")[0] for r in rows]
    held = held_out_indices(samples, 6, seed=7)
    assert len(held) == 8 and len({passage[i] for i in held}) == 2          # 6 asked: 2 whole passages of 4
    trained = {passage[i] for i in range(40) if i not in held}
    assert not trained & {passage[i] for i in held}
    assert held_out_indices(samples, 6, seed=7, val_split="record") == validation_indices(40, 6, 7)
    distinct = [{"instruction": f"Question {i}: " + " ".join(random.Random(i).choices(WORDS, k=40)), "output": "x"}
                for i in range(30)]
    _, singles = _samples(tiny_llm_dir, distinct)
    assert held_out_indices(singles, 5, seed=1) == validation_indices(30, 5, 1)   # no groups: the record split


def test_trainer_holds_out_passages_for_eval_and_dev(tiny_llm_dir, tmp_path):
    import ragtune as rt
    from ragtune.core.errors import DataError

    rows = shared_context_records(6, 3, seed=4, words=30)
    train = write_json(tmp_path / "t.json", rows)
    res = rt.finetune.lora.run(str(tiny_llm_dir), str(train), str(tmp_path / "out"), max_steps=1, dtype="fp32",
                               per_device_train_batch_size=2, cutoff_len=256, val_size=2, merge=False)
    assert res.metrics["val_samples"] == 3 and res.metrics["train_samples"] == 15
    with pytest.raises(DataError, match="every prompt group"):
        rt.finetune.lora.run(str(tiny_llm_dir), str(train), str(tmp_path / "all"), max_steps=1, dtype="fp32",
                             cutoff_len=256, val_size=17)
