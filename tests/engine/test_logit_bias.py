"""SamplingParams.logit_bias (OpenAI's logit_bias) in the builtin engine's decode loop."""
from __future__ import annotations

import pytest

from .test_batch_invariance import left_padded
from .test_decode_loop import PROMPTS


def _engine(tiny_llm_dir):
    from ragtune.engine.builtin import BuiltinEngine

    return BuiltinEngine.load(str(tiny_llm_dir), dtype="fp32", device="cpu")


def _most_likely_other(engine, prompts, exclude: set[int]) -> int:
    """A token the model would often pick: the argmax of the first step, other than ``exclude``."""
    import torch

    ids, mask = left_padded(engine, prompts)
    with torch.inference_mode():
        logits = engine.model(input_ids=ids, attention_mask=mask).logits[:, -1]
    ranked = logits.mean(0).argsort(descending=True).tolist()
    return next(t for t in ranked if t not in exclude)


def test_biased_greedy_equals_generate_with_the_same_sequence_bias(tiny_llm_dir):
    import torch

    from ragtune.engine.base import SamplingParams

    engine = _engine(tiny_llm_dir)
    prompts = [engine.encode_text(p) for p in PROMPTS]
    token = _most_likely_other(engine, prompts, engine.eos_ids)
    bias = ((token, 2.5), (sorted(engine.eos_ids)[0], -1.5))
    got = engine.generate_ids(prompts, SamplingParams(max_tokens=8, logit_bias=bias))
    plain = engine.generate_ids(prompts, SamplingParams(max_tokens=8))
    assert [c.token_ids for c in got] != [c.token_ids for c in plain]   # the bias changed answers
    ids, mask = left_padded(engine, prompts)
    with torch.inference_mode():
        out = engine.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                    pad_token_id=engine.pad_id, eos_token_id=sorted(engine.eos_ids),
                                    sequence_bias={(t,): b for t, b in bias})
    for row, completion in enumerate(got):
        expected = []
        for t in out[row, ids.shape[1]:].tolist():
            if t in engine.eos_ids:
                break
            expected.append(t)
        assert completion.token_ids == expected, row


def test_an_eos_bias_sets_answer_length(tiny_llm_dir):
    from ragtune.engine.base import SamplingParams

    engine = _engine(tiny_llm_dir)
    prompts = [engine.encode_text(p) for p in PROMPTS]
    eos = tuple((t, 100.0) for t in sorted(engine.eos_ids))
    stop_now = engine.generate_ids(prompts, SamplingParams(max_tokens=6, logit_bias=eos))
    assert all(c.token_ids == [] and c.finish_reason == "stop" for c in stop_now)
    never = tuple((t, -100.0) for t in sorted(engine.eos_ids))
    run_on = engine.generate_ids(prompts, SamplingParams(max_tokens=6, logit_bias=never))
    assert all(len(c.token_ids) == 6 and c.finish_reason == "length" for c in run_on)


@pytest.mark.parametrize("bias, message", [
    (((0, 101.0),), "must be in [-100, 100]"),
    (((-1, 1.0),), "integers >= 0"),
    ((("7", 1.0),), "integers >= 0"),
])
def test_bad_logit_bias_is_refused_when_built(bias, message):
    from ragtune.core.errors import ConfigError
    from ragtune.engine.base import SamplingParams

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SamplingParams(logit_bias=bias)


def test_a_token_id_outside_the_vocabulary_is_refused_before_decoding(tiny_llm_dir):
    from ragtune.core.errors import ConfigError
    from ragtune.engine.base import SamplingParams

    engine = _engine(tiny_llm_dir)
    vocab = engine.model.get_output_embeddings().weight.shape[0]
    params = SamplingParams(logit_bias=((vocab, 1.0),))
    with pytest.raises(ConfigError, match=f"token id {vocab} is outside"):
        engine.generate_ids([engine.encode_text("pump")], params)
    with pytest.raises(ConfigError, match=f"token id {vocab} is outside"):
        engine.submit(engine.encode_text("pump"), params)
