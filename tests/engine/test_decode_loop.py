"""ragtune's decode loop (BuiltinEngine._decode): generate's greedy answers, with finished rows dropped."""
from __future__ import annotations

import pytest

from .test_batch_invariance import left_padded

PROMPTS = ["pump valve", "north station filter serial", "the model hours", "valve " * 9 + "pump",
           "serial north", "filter filter station model pump valve hours"]
MAX_TOKENS = [3, 9, 1, 6, 12, 5]


def _hf_generate(engine, prompts: list[list[int]], max_new: int) -> list[list[int]]:
    """What the engine used to run: one left-padded ``model.generate`` over the batch."""
    import torch

    ids, mask = left_padded(engine, prompts)
    with torch.inference_mode():
        out = engine.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                                    pad_token_id=engine.pad_id, eos_token_id=sorted(engine.eos_ids))
    return out[:, ids.shape[1]:].tolist()


def _until_eos(tokens: list[int], eos: set[int], limit: int) -> list[int]:
    out = []
    for t in tokens[:limit]:
        if t in eos:
            break
        out.append(t)
    return out


@pytest.mark.parametrize("prefix_cache", [False, True])
def test_greedy_rows_equal_generate_and_leave_the_batch_when_done(tiny_llm_dir, prefix_cache):
    from ragtune.engine.base import SamplingParams
    from ragtune.engine.builtin import BuiltinEngine, _Request

    engine = BuiltinEngine.load(str(tiny_llm_dir), dtype="fp32", device="cpu", prefix_cache=prefix_cache)
    prompts = [engine.encode_text(p) for p in PROMPTS]
    sizes: list[int] = []
    hook = engine.model.register_forward_pre_hook(lambda _m, _a, kw: sizes.append(kw["input_ids"].shape[0]),
                                                  with_kwargs=True)
    try:
        reqs = [_Request(p, SamplingParams(max_tokens=k)) for p, k in zip(prompts, MAX_TOKENS)]
        got = engine.run_batch(reqs)
    finally:
        hook.remove()
    expected = _hf_generate(engine, prompts, max(MAX_TOKENS))
    for row, (c, k) in enumerate(zip(got, MAX_TOKENS)):
        assert c.token_ids == _until_eos(expected[row], engine.eos_ids, k), row
        assert c.finish_reason == ("length" if len(c.token_ids) == k else "stop")
    # each row takes part in exactly the forwards that produced its tokens; generate ran every row to 12
    assert sum(sizes) == sum(len(c.token_ids) + (c.finish_reason == "stop") for c in got)
    assert sizes[0] == len(PROMPTS) and sizes == sorted(sizes, reverse=True) and sizes[-1] < len(PROMPTS)


@pytest.mark.parametrize("mode", ["vocab", "span"])
def test_constrained_rows_keep_their_own_allowed_ids_after_rows_leave(tiny_llm_dir, mode):
    """The first row leaves after 2 tokens; the rows after it must keep their own allowed ids."""
    from ragtune.engine.base import SamplingParams
    from ragtune.engine.builtin import BuiltinEngine, _Request
    from ragtune.engine.extractive import build_constraint

    engine = BuiltinEngine.load(str(tiny_llm_dir), dtype="fp32", device="cpu", prefix_cache=False)
    contexts = ["pump valve north station", "filter serial model hours", "north north valve pump"]
    prompts = [engine.encode_text(f"Known paragraph: {c}\nQuestion: what?") for c in contexts]
    cons = [build_constraint(engine.tokenizer, c, mode, engine.eos_ids) for c in contexts]
    limits = [2, 8, 8]

    def reqs(rows):
        return [_Request(prompts[i], SamplingParams(max_tokens=limits[i]), constraint=cons[i]) for i in rows]

    together = engine.run_batch(reqs([0, 1, 2]))
    alone = [engine.run_batch(reqs([i]))[0] for i in range(3)]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert [len(c.token_ids) for c in together][0] <= 2
    for c, con in zip(together, cons):
        assert c.token_ids and set(c.token_ids) <= set(con.allowed)
