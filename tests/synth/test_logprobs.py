"""`ragtune serve` returns logprobs / top_logprobs in the OpenAI shape, equal to the model's own scores."""
import math

import pytest
import torch


def reference_logprobs(engine, prompt_ids, token_ids):
    """Independent of the engine's code path: full-sequence logits, log-softmax, read off."""
    seq = torch.tensor([[*prompt_ids, *token_ids]])
    with torch.no_grad():
        logits = engine.model(input_ids=seq).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    n = len(prompt_ids)
    return [float(logp[n - 1 + i, t]) for i, t in enumerate(token_ids)], logp[n - 1:n - 1 + len(token_ids)]


def test_chat_logprobs_match_the_engines_own_token_scores(http, llm_engine):
    body = {"messages": [{"role": "user", "content": "the pump valve"}], "max_tokens": 8,
            "logprobs": True, "top_logprobs": 4}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    content = choice["logprobs"]["content"]
    assert "".join(t["token"] for t in content) == choice["message"]["content"]
    ids = llm_engine.tokenizer(choice["message"]["content"], add_special_tokens=False)["input_ids"]
    prompt = llm_engine.encode_chat([{"role": "user", "content": "the pump valve"}])
    # ids of the generated tokens, from the id form of the same request
    r2 = http.post("/v1/chat/completions", json={**body, "return_tokens_as_token_ids": True})
    gen = [int(t["token"].split(":")[1]) for t in r2.json()["choices"][0]["logprobs"]["content"]]
    assert llm_engine.tokenizer.decode(gen) == choice["message"]["content"] and len(gen) == len(content) == 8
    ref, ref_rows = reference_logprobs(llm_engine, prompt, gen)
    for tok, want, row in zip(content, ref, ref_rows):
        assert tok["logprob"] == pytest.approx(want, abs=1e-4)
        assert len(tok["top_logprobs"]) == 4
        top_vals = [a["logprob"] for a in tok["top_logprobs"]]
        assert top_vals == sorted(top_vals, reverse=True)
        assert top_vals[0] == pytest.approx(float(row.max()), abs=1e-4)
        assert tok["logprob"] == pytest.approx(top_vals[0], abs=1e-5)      # greedy: the chosen token is the argmax
        assert tok["bytes"] == list(tok["token"].encode())
        assert sum(math.exp(v) for v in top_vals) <= 1 + 1e-6
    assert ids[: len(gen)] == gen or llm_engine.tokenizer.decode(ids) == llm_engine.tokenizer.decode(gen)


def test_completions_legacy_logprobs_and_request_errors(http, llm_engine):
    r = http.post("/v1/completions", json={"prompt": "the pump", "max_tokens": 5, "logprobs": 2})
    assert r.status_code == 200, r.text
    lp = r.json()["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"]) == 5
    assert "".join(lp["tokens"]) == r.json()["choices"][0]["text"]
    assert all(len(t) <= 2 for t in lp["top_logprobs"]) and lp["text_offset"][0] == 0
    # no logprobs asked: none returned (and the key is there, as OpenAI sends it)
    plain = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 2})
    assert plain.json()["choices"][0]["logprobs"] is None
    bad = [({"top_logprobs": 3}, "top_logprobs"), ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
           ({"logprobs": True, "stream": True}, "logprobs")]
    for extra, param in bad:
        r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], **extra})
        assert r.status_code == 400 and param in r.text, (extra, r.text)


def test_engine_logprobs_respect_a_stop_string(llm_engine):
    from ragtune.engine.base import SamplingParams

    ids = llm_engine.encode_chat("the pump valve")
    full = llm_engine.generate_ids([ids], SamplingParams(max_tokens=8, logprobs=0))[0]
    pieces = [t.token for t in full.logprobs]
    offsets = [len("".join(pieces[:k])) for k in range(len(pieces))]
    # a stop string that first occurs exactly where token k starts: the cut is at a token boundary
    k = next(k for k in range(2, len(pieces)) if pieces[k] and full.text.find(pieces[k]) == offsets[k])
    cut = llm_engine.generate_ids([ids], SamplingParams(max_tokens=8, logprobs=0, stop=(pieces[k],)))[0]
    assert cut.text == full.text[: offsets[k]] and cut.finish_reason == "stop"
    assert len(cut.logprobs) == k and "".join(t.token for t in cut.logprobs) == cut.text
    assert [t.logprob for t in cut.logprobs] == pytest.approx([t.logprob for t in full.logprobs[:k]], abs=1e-6)
