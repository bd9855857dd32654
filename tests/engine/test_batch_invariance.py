"""Greedy results and batching (issue 19, item 6).

What the engine promises (docs/serve.md, "Greedy results and batching"): a row's logits in a
left-padded batch equal its logits alone up to float rounding, so greedy answers do not depend on the
batch size or on the neighbours of a request, except where two tokens are tied to within that
rounding. The real-model rate of such flips is measured by benchmarks/batch_invariance.py.
"""
from __future__ import annotations

import pytest

PROMPTS = [" ".join(["pump valve north"] * k) + f" station {k}?" for k in range(1, 13)]   # 12 lengths


def left_padded(engine, batch: list[list[int]]):
    """(input_ids, attention_mask) of ``batch`` left-padded as the engine pads its batches."""
    import torch

    width = max(len(x) for x in batch)
    ids = torch.full((len(batch), width), engine.pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, x in enumerate(batch):
        ids[i, width - len(x):] = torch.tensor(x)
        mask[i, width - len(x):] = 1
    return ids, mask


def _first_step_logits(engine, batch: list[list[int]]):
    """Logits of the first generated token for each row of a left-padded batch, through ``generate``
    (which derives positions from the attention mask, as the engine's batches do)."""
    import torch

    ids, mask = left_padded(engine, batch)
    with torch.inference_mode():
        out = engine.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=1, do_sample=False,
                                    output_logits=True, return_dict_in_generate=True, pad_token_id=engine.pad_id)
    return out.logits[0].float()


def test_padding_changes_logits_only_by_rounding(tiny_llm_dir):
    import torch

    from ragtune.engine.builtin import BuiltinEngine

    engine = BuiltinEngine.load(str(tiny_llm_dir), dtype="fp32", device="cpu", prefix_cache=False)
    ids = [engine.encode_text(p) for p in PROMPTS]
    assert len({len(x) for x in ids}) == len(ids)            # every row of the batch is padded differently
    alone = torch.cat([_first_step_logits(engine, [x]) for x in ids])
    batched = _first_step_logits(engine, ids)
    scale = alone.abs().max().item()
    assert scale > 0
    assert (alone - batched).abs().max().item() <= 1e-5 * max(scale, 1.0)
    engine.close()


@pytest.mark.parametrize("prefix_cache", [False, True])
def test_greedy_answers_do_not_depend_on_the_batch_size(tiny_llm_dir, prefix_cache):
    from ragtune.engine.base import SamplingParams
    from ragtune.engine.builtin import BuiltinEngine

    params = SamplingParams(max_tokens=12)
    answers = {}
    for size in (1, 4, 12):
        engine = BuiltinEngine.load(str(tiny_llm_dir), dtype="fp32", device="cpu", max_batch_size=size,
                                    prefix_cache=prefix_cache, prefix_min_tokens=4)
        ids = [engine.encode_text(p) for p in PROMPTS]
        answers[size] = [c.token_ids for c in engine.generate_ids(ids, params)]
        if size == 12:   # the same batching twice: bit-identical
            assert [c.token_ids for c in engine.generate_ids(ids, params)] == answers[size]
        engine.close()
    assert any(len(set(a)) > 1 for a in answers[1])          # the answers are not one repeated token
    assert answers[4] == answers[1] and answers[12] == answers[1]
