"""The real FastAPI/uvicorn server on localhost with a tiny model: every endpoint, end to end."""
from __future__ import annotations

import json
import threading

import httpx
import pytest

from ragtune.core.prompt import build_prompt, encode_prompt
from ragtune.engine.builtin import SamplingParams

MSGS = [{"role": "user", "content": "what is the pump pressure"}]


def chat(http, **body):
    return http.post("/v1/chat/completions", json={"messages": MSGS, **body})


def sse_events(resp) -> list:
    events = []
    for line in resp.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_health_and_models(http, llm_engine):
    assert http.get("/health").json() == {"status": "ok", "model": llm_engine.name, "kind": "llm"}
    models = http.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [llm_engine.name]


def test_chat_matches_engine_and_shared_prompt_builder(http, llm_engine):
    resp = chat(http, max_tokens=10)
    assert resp.status_code == 200
    body = resp.json()
    expected = llm_engine.generate([MSGS], SamplingParams(max_tokens=10))[0]
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": expected.text}
    assert expected.text  # readable model: non-empty ascii words
    prompt_ids = encode_prompt(llm_engine.tokenizer, build_prompt(llm_engine.tokenizer, MSGS, llm_engine.prompt))
    assert body["usage"] == {"prompt_tokens": len(prompt_ids), "completion_tokens": 10,
                             "total_tokens": len(prompt_ids) + 10}
    assert body["choices"][0]["finish_reason"] == "length"


def test_chat_streaming_equals_non_streaming(http):
    plain = chat(http, max_tokens=12).json()["choices"][0]["message"]["content"]
    with http.stream("POST", "/v1/chat/completions", json={"messages": MSGS, "max_tokens": 12, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == plain
    assert len([c for c in chunks if c["choices"][0]["delta"].get("content")]) >= 3  # really incremental
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_stop_strings_cut_output_streaming_and_not(http):
    full = chat(http, max_tokens=20).json()["choices"][0]["message"]["content"]
    stop = full[6:9]
    cut = full.find(stop)
    body = chat(http, max_tokens=20, stop=[stop, "zzzz"]).json()
    assert body["choices"][0]["message"]["content"] == full[:cut]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] < 20
    with http.stream("POST", "/v1/chat/completions",
                     json={"messages": MSGS, "max_tokens": 20, "stop": stop, "stream": True}) as r:
        chunks = sse_events(r)[:-1]
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert streamed == full[:cut] and stop not in streamed
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_completions_raw_prompt(http, llm_engine):
    resp = http.post("/v1/completions", json={"prompt": "the valve model", "max_tokens": 8})
    body = resp.json()
    expected = llm_engine.generate(["the valve model"], SamplingParams(max_tokens=8), raw=True)[0].text
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == expected
    assert body["usage"]["prompt_tokens"] == len(encode_prompt(llm_engine.tokenizer, "the valve model"))
    with http.stream("POST", "/v1/completions", json={"prompt": ["the valve model"], "max_tokens": 8,
                                                      "stream": True}) as r:
        events = sse_events(r)
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == expected


def test_logit_bias_reaches_the_decode_loop(http, llm_engine):
    """OpenAI's logit_bias: +100 on one token makes every answer token that token; the EOS tokens
    at +100 end the answer at once (the readable test model never picks EOS on its own)."""
    prompt = "the valve model"
    plain = llm_engine.generate([prompt], SamplingParams(max_tokens=6), raw=True)[0]
    forced = plain.token_ids[0] + 1 if plain.token_ids[0] + 1 not in llm_engine.eos_ids else plain.token_ids[0] + 2
    body = http.post("/v1/completions", json={"prompt": prompt, "max_tokens": 6,
                                              "logit_bias": {str(forced): 100}}).json()
    expected = llm_engine.generate([prompt], SamplingParams(max_tokens=6, logit_bias=((forced, 100.0),)),
                                   raw=True)[0]
    assert expected.token_ids == [forced] * 6 and body["choices"][0]["text"] == expected.text
    eos = {str(t): 100 for t in llm_engine.eos_ids}
    body = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": prompt}],
                                                   "max_tokens": 6, "logit_bias": eos}).json()
    assert body["choices"][0]["message"]["content"] == "" and body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 0


def test_sampling_seed_reproducible_and_params_validated(http):
    a = chat(http, max_tokens=12, temperature=1.5, top_p=0.9, seed=7).json()["choices"][0]["message"]["content"]
    b = chat(http, max_tokens=12, temperature=1.5, top_p=0.9, seed=7).json()["choices"][0]["message"]["content"]
    greedy = chat(http, max_tokens=12).json()["choices"][0]["message"]["content"]
    assert a == b
    samples = {chat(http, max_tokens=12, temperature=1.5, seed=s).json()["choices"][0]["message"]["content"]
               for s in range(4)}
    assert len(samples | {greedy}) > 1  # sampling really samples


@pytest.mark.parametrize("body,status,param,words", [
    ({}, 400, "messages", "field required"),
    ({"messages": []}, 400, "messages", "at least 1"),
    ({"messages": MSGS, "temperature": 5}, 400, "temperature", "less than or equal"),
    ({"messages": MSGS, "max_tokens": 0}, 400, "max_tokens", "greater than or equal"),
    ({"messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role", "input should be"),
    ({"messages": MSGS, "n": 2}, 400, "n", "only n=1"),
    ({"messages": MSGS, "tools": [{"type": "function"}]}, 400, "tools", "not supported"),
    ({"messages": MSGS, "model": "gpt-4"}, 404, "model", "does not exist"),
])
def test_invalid_requests_get_openai_errors(http, body, status, param, words):
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == status
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and words in err["message"].lower()


def test_malformed_json_and_unknown_route(http):
    resp = http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"
    resp = http.get("/v1/nothing")
    assert resp.status_code == 404 and resp.json()["error"]["type"] == "not_found_error"


def test_oversized_prompt_is_400_stating_the_limit(http, llm_engine):
    long = " ".join(["pressure"] * (llm_engine.max_model_len + 10))
    resp = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": long}]})
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == "context_length_exceeded" and str(llm_engine.max_model_len) in err["message"]
    assert http.get("/health").status_code == 200  # and the server is fine


def test_embeddings_on_llm_is_400(http):
    resp = http.post("/v1/embeddings", json={"input": "x"})
    assert resp.status_code == 400 and "embedding model" in resp.json()["error"]["message"]


def test_concurrent_requests_are_batched_and_match_single_results(http, llm_server, llm_engine):
    prompts = [f"what is the {w} of the station" for w in ("pump", "valve", "filter", "model", "serial", "bar")]
    singles = [llm_engine.generate([p], SamplingParams(max_tokens=8))[0].text for p in prompts]
    before = http.get("/metrics").json()["engine"]
    results: dict[int, str] = {}
    barrier = threading.Barrier(len(prompts))

    def call(i: int) -> None:
        with httpx.Client(base_url=llm_server.url, timeout=60) as c:
            barrier.wait()
            r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": prompts[i]}],
                                                     "max_tokens": 8})
            results[i] = r.json()["choices"][0]["message"]["content"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = http.get("/metrics").json()["engine"]
    assert [results[i] for i in range(len(prompts))] == singles  # left padding does not change results
    new_batches = after["batches"] - before["batches"]
    assert after["requests"] - before["requests"] == len(prompts)
    assert new_batches < len(prompts)  # several requests shared one generate call
    assert after["max_batch_size_seen"] >= 2


def test_eos_finishes_a_row_early_while_others_continue(llm_engine):
    from ragtune.engine.builtin import BuiltinEngine

    # a prompt whose greedy answer switches token at some step k (the random model loves repeats)
    candidates = ["hello pump", "the pump", "what is the valve pressure in bar", "north station filter"]
    found = [(p, c.token_ids) for p, c in zip(candidates, llm_engine.generate(candidates, SamplingParams(max_tokens=16)))
             if len(set(c.token_ids)) > 1]
    assert found, "no candidate prompt yields two distinct tokens"
    prompt, ids = found[0]
    k = next(k for k in range(1, len(ids)) if ids[k] not in ids[:k])
    engine = BuiltinEngine(llm_engine.model, llm_engine.tokenizer, name="eos-test")
    engine.eos_ids = {ids[k]}  # declare that token EOS: the answer must end right before it
    out = engine.generate([prompt, "what is the valve"], SamplingParams(max_tokens=16))
    assert out[0].finish_reason == "stop" and out[0].token_ids == ids[:k]
    assert out[0].text == llm_engine.tokenizer.decode(ids[:k])
    other = llm_engine.generate(["what is the valve"], SamplingParams(max_tokens=16))[0]
    if ids[k] not in other.token_ids:  # the other row is unaffected and runs to max_tokens
        assert out[1].token_ids == other.token_ids and out[1].finish_reason == "length"
