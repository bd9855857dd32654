"""Shared-prefix inference: prompts about one passage reuse its KV cache, with the same outputs."""
from __future__ import annotations

import pytest


def _prompts(tok, n_passages=3, questions=4, words=6, lone=True):
    import random

    rng = random.Random(0)
    vocab = ["pump", "valve", "north", "station", "filter", "serial", "model", "hours"]
    out = []
    for p in range(n_passages):
        passage = " ".join(rng.choice(vocab) for _ in range(words))
        for q in range(questions):
            text = f"Known paragraph: {passage} ({p})\nQuestion: {' '.join(rng.choice(vocab) for _ in range(q + 1))}?"
            out.append(tok(text, add_special_tokens=False)["input_ids"])
    if lone:
        out.append(tok("a lone question with no passage", add_special_tokens=False)["input_ids"])
    return out


@pytest.mark.parametrize("sampled", [False, True])
def test_prefix_cache_gives_the_same_outputs(tiny_llm_dir, sampled):
    from ragtune.engine.base import SamplingParams
    from ragtune.engine.builtin import BuiltinEngine

    with_cache = BuiltinEngine.load(str(tiny_llm_dir), dtype="fp32", device="cpu", max_batch_size=3,
                                    prefix_min_tokens=8)
    plain = BuiltinEngine.load(str(tiny_llm_dir), dtype="fp32", device="cpu", max_batch_size=3, prefix_cache=False)
    prompts = _prompts(with_cache.tokenizer)
    assert max(len(p) for p in prompts) + 6 <= 64                       # inside the tiny model's sliding window
    params = SamplingParams(max_tokens=6, temperature=0.8, seed=3) if sampled else SamplingParams(max_tokens=6)
    a = with_cache.generate_ids(prompts, params)
    b = plain.generate_ids(prompts, params)
    stats = with_cache.stats()["prefix_cache"]
    assert stats["groups"] == 3 and stats["items"] == 12 and stats["prefix_tokens_saved"] > 0
    if not sampled:  # sampling draws in another batch order: only the greedy outputs must match
        assert [c.token_ids for c in a] == [c.token_ids for c in b]
        assert [c.finish_reason for c in a] == [c.finish_reason for c in b]
    assert all(len(c.token_ids) <= 6 for c in a)


def test_prompts_longer_than_the_sliding_window_reuse_the_cache_with_the_same_outputs(tiny_llm_dir):
    """Rows stay [padding][prompt], so sliding-window distances are the plain path's at any length."""
    from ragtune.engine.base import SamplingParams
    from ragtune.engine.builtin import BuiltinEngine

    engine = BuiltinEngine.load(str(tiny_llm_dir), dtype="fp32", device="cpu", prefix_min_tokens=8)
    long = _prompts(engine.tokenizer, n_passages=2, questions=3, words=70, lone=False)   # > 64-token window
    assert min(len(p) for p in long) > 64 + 8
    plain = BuiltinEngine.load(str(tiny_llm_dir), dtype="fp32", device="cpu", prefix_cache=False)
    params = SamplingParams(max_tokens=12)
    a, b = engine.generate_ids(long, params), plain.generate_ids(long, params)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert engine.stats()["prefix_cache"]["groups"] == 2 and engine.stats()["prefix_cache"]["prefix_tokens_saved"] > 0


def test_groups_share_batches(tiny_llm_dir):
    """Several passages' questions decode in one batch (a random sample has ~1.4 per passage)."""
    from ragtune.engine.base import SamplingParams
    from ragtune.engine.builtin import BuiltinEngine

    engine = BuiltinEngine.load(str(tiny_llm_dir), dtype="fp32", device="cpu", prefix_min_tokens=8)
    prompts = _prompts(engine.tokenizer, n_passages=5, questions=2)
    plain = BuiltinEngine.load(str(tiny_llm_dir), dtype="fp32", device="cpu", prefix_cache=False)
    params = SamplingParams(max_tokens=6)
    a, b = engine.generate_ids(prompts, params), plain.generate_ids(prompts, params)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    stats = engine.stats()
    assert stats["prefix_cache"]["groups"] == 5 and stats["batch_size_histogram"] == {10: 1, 1: 1}
