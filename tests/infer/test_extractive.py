"""Extractive decoding: the output layer over the context's tokens only (vocab), and answers kept
substrings of the context (span)."""
from __future__ import annotations

import json


def _items():
    return [{"context": f"the pump valve model {c} is at the north station", "question": "what model?",
             "answers": {"text": [f"{c}"]}} for c in ("ABCD", "KQ12", "ZZ9X")]


def test_vocab_mode_only_emits_context_tokens_and_equals_masking_the_full_head(tiny_llm_dir):
    import torch

    from ragtune.engine.base import SamplingParams
    from ragtune.engine.builtin import BuiltinEngine
    from ragtune.engine.extractive import RestrictedHead, build_constraint

    engine = BuiltinEngine.load(str(tiny_llm_dir), dtype="fp32", device="cpu", prefix_cache=False)
    prompts = [engine.encode_chat(f"{it['context']}\n{it['question']}") for it in _items()]
    cons = [build_constraint(engine.tokenizer, it["context"], "vocab", engine.eos_ids) for it in _items()]
    out = engine.generate_ids(prompts, SamplingParams(max_tokens=8), constraints=cons)
    for c, con in zip(out, cons):
        assert set(c.token_ids) <= set(con.allowed)
    # the restricted head equals the full head masked to the allowed ids
    hidden = torch.randn(3, 1, engine.model.config.hidden_size)
    full = engine.model.get_output_embeddings()(hidden)
    with RestrictedHead(engine.model, cons) as head:
        fast = engine.model.get_output_embeddings()(hidden)
        assert head.allowed.shape[0] == 3
    for row, con in enumerate(cons):
        torch.testing.assert_close(fast[row, 0, con.allowed], full[row, 0, con.allowed])
        rest = torch.ones(full.shape[-1], dtype=torch.bool)
        rest[con.allowed] = False
        assert torch.isinf(fast[row, 0, rest]).all()
    assert torch.equal(engine.model.get_output_embeddings()(hidden), full)   # restored after the block


def test_span_mode_answers_are_substrings_of_the_context(tiny_llm_dir, tmp_path):
    from ragtune.infer.runner import InferConfig, run_infer

    path = tmp_path / "ev.json"
    path.write_text(json.dumps(_items()))
    rows = run_infer(InferConfig(evalset=str(path), output=str(tmp_path / "p.json"), model=str(tiny_llm_dir),
                                 extractive="span", max_tokens=6, dtype="fp32"), show_progress=False)
    for row, item in zip(rows, _items()):
        assert row["prediction"] == "" or row["prediction"] in item["context"]


def test_extractive_needs_a_context(tiny_llm_dir, tmp_path):
    import pytest

    from ragtune.core.errors import DataError
    from ragtune.infer.runner import InferConfig, run_infer

    path = tmp_path / "ev.json"
    path.write_text(json.dumps([{"prompt": "no context here"}]))
    with pytest.raises(DataError, match="record 0, field 'context'"):
        run_infer(InferConfig(evalset=str(path), output=str(tmp_path / "p.json"), model=str(tiny_llm_dir),
                              extractive="vocab", dtype="fp32"), show_progress=False)
