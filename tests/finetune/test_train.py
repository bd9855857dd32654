"""Acceptance tests of the builtin trainer on tiny random models (real training steps, no mocks)."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from .conftest import span_items, write_json  # noqa: E402  (tests/finetune/conftest.py)


def exact_match(model_dir, items) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragtune.core.prompt import build_prompt, encode_prompt

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    hits = 0
    for it in items:
        ids = torch.tensor([encode_prompt(tok, build_prompt(tok, it["instruction"]))])
        out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
        hits += tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip() == it["output"]
    return hits / len(items)


def test_full_finetune_learns_span_extraction(tiny_llm_dir, tmp_path):
    import ragtune as rt

    train = write_json(tmp_path / "train.json", span_items(600, seed=1))
    held_out = span_items(40, seed=99)
    res = rt.finetune.full.run(str(tiny_llm_dir), str(train), str(tmp_path / "run"), learning_rate=3e-3,
                               num_train_epochs=4, per_device_train_batch_size=8, val_size=40,
                               lr_scheduler_type="constant", dtype="fp32")
    m = res.metrics
    assert m["steps"] == 280 and m["train_samples"] == 560 and m["val_samples"] == 40
    assert m["final_loss"] < 0.1 * m["first_loss"]
    evals = [h["eval_loss"] for h in m["history"] if "eval_loss" in h]
    assert len(evals) == 4 and evals[-1] < 0.5 * evals[0]
    base_em, tuned_em = exact_match(tiny_llm_dir, held_out), exact_match(res.merged, held_out)
    # one letter out of 8, copied from the passage: guessing the format right gives ~1/8
    assert base_em < 0.2 and tuned_em >= 0.8, (base_em, tuned_em)


def test_lora_outputs_and_merge_equals_adapter_plus_base(tiny_llm_dir, span_train, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import ragtune as rt

    out = tmp_path / "run"
    res = rt.finetune.lora.run(str(tiny_llm_dir), str(span_train), str(out), learning_rate=1e-2,
                               num_train_epochs=2, per_device_train_batch_size=4, val_size=0.125,
                               eval_steps=5, save_steps=5, dtype="fp32", prompt={"system": "Answer briefly."},
                               pack_shared_prefix=False)
    m = res.metrics
    assert m["final_loss"] < m["first_loss"] and m["steps"] == 22
    assert json.loads((out / "metrics.json").read_text())["steps"] == 22
    for name in ("config.yaml", "loss.png", "train.log", "adapter/adapter_config.json",
                 "adapter/adapter_model.safetensors", "merged/config.json", "merged/tokenizer.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-20", "step-22"]  # limit 2
    info = json.loads((out / "ragtune_finetune.json").read_text())
    assert info["method"] == "lora" and info["prompt"]["system"] == "Answer briefly."
    assert "training on 48 of 48 samples" in (out / "train.log").read_text()
    target = json.loads((out / "adapter/adapter_config.json").read_text())["target_modules"]
    assert sorted(target) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]

    ids = torch.tensor([[1, 50, 60, 70, 80, 90, 100]])
    base = AutoModelForCausalLM.from_pretrained(tiny_llm_dir, dtype=torch.float32)
    plain = base(ids).logits
    with_adapter = PeftModel.from_pretrained(base, str(out / "adapter")).eval()(ids).logits
    merged_model = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32)
    merged = merged_model(ids).logits
    assert (with_adapter - plain).abs().max() > 1e-3            # the adapter does something
    torch.testing.assert_close(merged, with_adapter, rtol=1e-4, atol=1e-4)
    assert merged_model.lm_head.weight.data_ptr() == merged_model.model.embed_tokens.weight.data_ptr()


def test_freeze_trains_only_top_layers(tiny_llm_dir, span_train, tmp_path):
    from safetensors.torch import load_file

    import ragtune as rt

    out = tmp_path / "run"
    rt.finetune.freeze.run(str(tiny_llm_dir), str(span_train), str(out), freeze_trainable_layers=1,
                           learning_rate=1e-2, max_steps=3, per_device_train_batch_size=4)  # bf16 autocast here
    before = load_file(str(tiny_llm_dir / "model.safetensors"))
    after = load_file(str(out / "merged/model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.layers.1.") for k in changed)
    unchanged_top = {k for k in before if k.startswith("model.layers.1.")} - changed
    assert not {k for k in unchanged_top if "proj" in k}       # every top-layer matrix moved
    assert not (out / "adapter").exists()


def test_resume_after_ctrl_c_equals_uninterrupted(tiny_llm_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import ragtune as rt
    from ragtune.finetune.llm import trainer

    train = write_json(tmp_path / "t.json", span_items(12, seed=3))
    kw = dict(learning_rate=5e-3, num_train_epochs=2, per_device_train_batch_size=2, lora_dropout=0.1,
              save_steps=3, dtype="fp32", merge=False, lora_rank=4)
    rt.finetune.lora.run(str(tiny_llm_dir), str(train), str(tmp_path / "a"), **kw)

    original = trainer.Loop._after_step

    def interrupt_at_8(self, state, *args):
        original(self, state, *args)
        if state["step"] == 8:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer.Loop, "_after_step", interrupt_at_8)
    with pytest.raises(KeyboardInterrupt):
        rt.finetune.lora.run(str(tiny_llm_dir), str(train), str(tmp_path / "b"), **kw)
    assert (tmp_path / "b/checkpoints/step-8/trainable.safetensors").exists()   # Ctrl-C saved
    assert not (tmp_path / "b/adapter").exists()
    monkeypatch.setattr(trainer.Loop, "_after_step", original)
    res = rt.finetune.lora.run(str(tiny_llm_dir), str(train), str(tmp_path / "b"), resume=True, **kw)
    assert res.metrics["steps"] == 12

    a = load_file(str(tmp_path / "a/adapter/adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b/adapter/adapter_model.safetensors"))
    assert a.keys() == b.keys() and len(a) == 28
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_output_dir_guard(tiny_llm_dir, span_train, tmp_path):
    import ragtune as rt
    from ragtune.core.errors import ConfigError

    out = tmp_path / "run"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(ConfigError, match="is not empty"):
        rt.finetune.lora.run(str(tiny_llm_dir), str(span_train), str(out))


def test_full_without_embeddings_keeps_them_bit_identical(tiny_llm_dir, span_train, tmp_path):
    import ragtune as rt
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    rt.finetune.full.run(str(tiny_llm_dir), str(span_train), str(out), max_steps=3, dtype="fp32",
                         learning_rate=1e-2, train_embeddings=False)
    base = AutoModelForCausalLM.from_pretrained(tiny_llm_dir, dtype=torch.float32)
    tuned = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32)
    assert torch.equal(base.get_input_embeddings().weight, tuned.get_input_embeddings().weight)
    changed = [n for (n, a), (_, b) in zip(base.named_parameters(), tuned.named_parameters()) if not torch.equal(a, b)]
    assert changed and all("embed" not in n for n in changed)
