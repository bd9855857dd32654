"""`ragtune serve` against bad requests, on real servers on 127.0.0.1 with tiny models: every client
mistake is a 4xx in OpenAI's error shape naming the request field, nothing is coerced or silently
ignored, the keep-alive connection stays usable after an error, and an abandoned stream stops
costing decode time."""
from __future__ import annotations

import concurrent.futures
import json
import threading
import time

import httpx
import pytest

from .keepalive import KeepAlive, ServerClosed

MSGS = [{"role": "user", "content": "what is the pump pressure"}]
CHAT, COMPLETIONS, EMBEDDINGS = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"


def chat(**fields):
    return {"messages": MSGS, "max_tokens": 2, **fields}


def completion(**fields):
    return {"prompt": "the pump", "max_tokens": 2, **fields}


# (id, path, body, status, param, words in the message)
BAD_LLM_REQUESTS = [
    ("max_tokens-bool", CHAT, chat(max_tokens=True), 400, "max_tokens", "valid integer"),
    ("max_tokens-float", CHAT, chat(max_tokens=1.5), 400, "max_tokens", "valid integer"),
    ("max_tokens-string", CHAT, chat(max_tokens="8"), 400, "max_tokens", "valid integer"),
    ("max_tokens-huge", CHAT, chat(max_tokens=10 ** 9), 400, "messages", "tokens"),
    ("stream-yes", CHAT, chat(stream="yes"), 400, "stream", "valid boolean"),
    ("stream-1", CHAT, chat(stream=1), 400, "stream", "valid boolean"),
    ("temperature-string", CHAT, chat(temperature="0.5"), 400, "temperature", "valid number"),
    ("temperature-negative", CHAT, chat(temperature=-1), 400, "temperature", "greater than or equal"),
    ("top_p-zero", CHAT, chat(top_p=0), 400, "top_p", "greater than"),
    ("n-string", CHAT, chat(n="1"), 400, "n", "valid integer"),
    ("n-2", CHAT, chat(n=2), 400, "n", "only n=1"),
    ("seed-too-big", CHAT, chat(seed=2 ** 70), 400, "seed", "less than or equal"),
    ("seed-too-small", CHAT, chat(seed=-(2 ** 64)), 400, "seed", "greater than or equal"),
    ("seed-float", CHAT, chat(seed=1.5), 400, "seed", "valid integer"),
    ("stop-number", CHAT, chat(stop=[1]), 400, "stop.0", "valid string"),
    ("stop-five", CHAT, chat(stop=["a", "b", "c", "d", "e"]), 400, "stop", "up to 4"),
    ("stop-empty", CHAT, chat(stop=[""]), 400, "stop", "non-empty"),
    ("surrogate-content", CHAT, {"messages": [{"role": "user", "content": "bad \ud800 text"}]}, 400,
     "messages.0.content", "unpaired surrogate"),
    ("surrogate-part", CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]},
     400, "messages.0.content.0.text", "unpaired surrogate"),
    ("surrogate-stop", CHAT, chat(stop="\ud83d"), 400, "stop", "unpaired surrogate"),
    ("presence_penalty", CHAT, chat(presence_penalty=0.5), 400, "presence_penalty", "not supported"),
    ("frequency_penalty", CHAT, chat(frequency_penalty=1), 400, "frequency_penalty", "not supported"),
    ("logit_bias-key-word", CHAT, chat(logit_bias={"eos": 10}), 400, "logit_bias.eos", "token ids"),
    ("logit_bias-key-negative", CHAT, chat(logit_bias={"-5": 10}), 400, "logit_bias.-5", "token ids"),
    ("logit_bias-too-big", CHAT, chat(logit_bias={"5": 101}), 400, "logit_bias.5", "[-100, 100]"),
    ("logit_bias-string-value", CHAT, chat(logit_bias={"5": "10"}), 400, "logit_bias.5", "valid number"),
    ("logit_bias-list", CHAT, chat(logit_bias=[5, 10]), 400, "logit_bias", "valid dictionary"),
    ("logit_bias-outside-vocab", CHAT, chat(logit_bias={str(10 ** 7): 1}), 400, "logit_bias", "outside"),
    ("logit_bias-outside-vocab-completions", COMPLETIONS, completion(logit_bias={str(10 ** 7): 1}), 400,
     "logit_bias", "outside"),
    ("tools", CHAT, chat(tools=[{"type": "function"}]), 400, "tools", "not supported"),
    ("stream_options-no-stream", CHAT, chat(stream_options={"include_usage": True}), 400, "stream_options",
     "needs stream=true"),
    ("stream_options-string", CHAT, chat(stream=True, stream_options={"include_usage": "yes"}), 400,
     "stream_options.include_usage", "valid boolean"),
    ("stream_options-unknown", CHAT, chat(stream=True, stream_options={"continuous_usage": True}), 400,
     "stream_options.continuous_usage", "extra inputs"),
    ("unknown-field", CHAT, chat(temprature=0.5), 400, "temprature", "unrecognized"),
    ("message-name", CHAT, {"messages": [{"role": "user", "content": "hi", "name": "bob"}]}, 400,
     "messages.0.name", "extra inputs"),
    ("role-tool", CHAT, {"messages": [{"role": "tool", "content": "x"}]}, 400, "messages.0.role", "input should be"),
    ("messages-string", CHAT, {"messages": "hi"}, 400, "messages", "valid list"),
    ("messages-empty", CHAT, {"messages": []}, 400, "messages", "at least 1"),
    ("content-number", CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content", "valid"),
    ("content-image", CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "messages.0.content.0.type", "only 'text'"),
    ("content-part-text-number", CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]},
     400, "messages.0.content.0.text", "string"),
    ("model-unknown", CHAT, chat(model="gpt-4"), 404, "model", "does not exist"),
    ("model-number", CHAT, chat(model=7), 400, "model", "valid string"),
    ("prompt-two", COMPLETIONS, completion(prompt=["a", "b"]), 400, "prompt", "one prompt"),
    ("prompt-number", COMPLETIONS, completion(prompt=5), 400, "prompt", "valid"),
    ("prompt-surrogate", COMPLETIONS, completion(prompt="\ud800"), 400, "prompt", "unpaired surrogate"),
    ("echo", COMPLETIONS, completion(echo=True), 400, "echo", "not supported"),
    ("suffix", COMPLETIONS, completion(suffix="end"), 400, "suffix", "not supported"),
    ("best_of", COMPLETIONS, completion(best_of=3), 400, "best_of", "not supported"),
    ("embeddings-on-llm", EMBEDDINGS, {"input": "x"}, 400, "model", "/v1/embeddings needs"),
]


@pytest.mark.parametrize("path, body, status, param, words", [c[1:] for c in BAD_LLM_REQUESTS],
                         ids=[c[0] for c in BAD_LLM_REQUESTS])
def test_bad_llm_request_is_a_4xx_naming_the_field_and_keeps_the_connection(llm_server, path, body, status,
                                                                            param, words):
    with KeepAlive(llm_server.url) as conn:
        got, _, resp = conn.request("POST", path, body)
        assert got == status, resp
        err = resp["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert err["param"] == param, err
        assert words.lower() in err["message"].lower(), err
        assert err["type"] in ("invalid_request_error", "not_found_error")
        assert conn.request("GET", "/health")[0] == 200   # the same keep-alive connection still works
    assert conn.requests == 2


def test_neutral_values_of_unsupported_fields_and_bookkeeping_tags_are_accepted(llm_server):
    """What OpenAI client libraries send by default must keep working (LangChain sends the zeros)."""
    body = chat(presence_penalty=0, frequency_penalty=0.0, logit_bias={}, tools=[], user="u-1",
                metadata={"k": "v"}, store=False, logprobs=False, stream=False, n=1)
    with KeepAlive(llm_server.url) as conn:
        status, _, resp = conn.request("POST", CHAT, body)
    assert status == 200 and resp["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize("raw, words", [
    (b"{not json", "json"),
    (b"", "field required"),
    (b"[]", "valid dictionary"),
    (b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', "parsing the body"),   # not UTF-8
    (b"[" * 100_000 + b"]" * 100_000, ""),                                              # nested too deep
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e400}', "max_tokens"),
])
def test_malformed_bodies_are_400s(llm_server, raw, words):
    with KeepAlive(llm_server.url) as conn:
        status, _, resp = conn.request("POST", CHAT, raw, headers={"content-type": "application/json"})
        assert status == 400 and resp["error"]["type"] == "invalid_request_error", resp
        assert words in resp["error"]["message"].lower()
        assert conn.request("GET", "/health")[0] == 200


def test_every_bad_request_on_one_connection(llm_server):
    """All of the table on ONE keep-alive connection, then a real completion on it."""
    with KeepAlive(llm_server.url) as conn:
        for _, path, body, status, _, _ in BAD_LLM_REQUESTS:
            assert conn.request("POST", path, body)[0] == status
        status, _, resp = conn.request("POST", CHAT, chat(max_tokens=3))
    assert status == 200 and resp["usage"]["completion_tokens"] == 3


def test_an_engine_failure_is_a_500_and_the_connection_survives(llm_server, llm_engine, monkeypatch):
    """A fault on the server's side (here the engine's encoder raising, as a CUDA OOM would) is a 500
    in OpenAI's shape; Starlette re-raises past its own 500 handler and uvicorn then closed the
    connection, so the client's next request on it was reset."""
    def broken(*a, **k):
        raise RuntimeError("simulated device failure")

    monkeypatch.setattr(llm_engine, "encode_chat", broken)
    with KeepAlive(llm_server.url) as conn:
        status, _, resp = conn.request("POST", CHAT, chat())
        assert status == 500 and resp["error"]["type"] == "server_error"
        assert "simulated device failure" in resp["error"]["message"]
        monkeypatch.undo()
        status, _, resp = conn.request("POST", CHAT, chat())
    assert status == 200 and resp["choices"][0]["finish_reason"] == "length"


# -- the guarded server: API key, Host allow-list, body limit ----------------------------------------------
KEY = "k3y"


@pytest.fixture(scope="module")
def guarded(llm_engine):
    from ragtune.serve.app import create_app
    from ragtune.serve.server import ServerThread

    app = create_app(llm_engine, api_key=KEY, max_request_bytes=64 * 1024, default_max_tokens=2)
    with ServerThread(app, port=0) as srv:
        yield srv


AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/metrics", "/v1/models", "/docs/oauth2-redirect"])
def test_docs_and_schema_need_the_key(guarded, path):
    with KeepAlive(guarded.url) as conn:
        status, _, resp = conn.request("GET", path)
        assert status == 401 and resp["error"]["code"] == "invalid_api_key"
        assert conn.request("GET", path, headers=AUTH)[0] == 200
        assert conn.request("GET", "/health")[0] == 200   # probes need no key


@pytest.mark.parametrize("host, ok", [
    ("evil.example.com", False), ("evil.example.com:{port}", False), ("127.0.0.1.nip.io:{port}", False),
    ("", False), ("localhost:{port}", True), ("LOCALHOST", True), ("127.0.0.1:{port}", True),
    ("[::1]:{port}", True),
])
def test_host_header_is_checked_against_dns_rebinding(guarded, host, ok):
    with KeepAlive(guarded.url) as conn:
        status, _, resp = conn.request("GET", "/v1/models", headers={"host": host.format(port=guarded.port), **AUTH})
        if ok:
            assert status == 200
        else:
            assert status == 400 and resp["error"]["code"] == "invalid_host" and "allowed_hosts" in resp["error"]["message"]


def test_allowed_hosts_is_configurable(llm_engine):
    from ragtune.serve.app import create_app
    from ragtune.serve.guards import default_allowed_hosts
    from ragtune.serve.server import ServeConfig, ServerThread

    assert default_allowed_hosts("127.0.0.1") == ["localhost", "127.0.0.1", "::1"]
    assert default_allowed_hosts("0.0.0.0") == ["*"]
    assert ServeConfig(model="m", allowed_hosts=["api.internal"]).resolved_allowed_hosts() == ["api.internal"]
    with ServerThread(create_app(llm_engine, allowed_hosts=["api.internal"]), port=0) as srv:
        with KeepAlive(srv.url) as conn:
            assert conn.request("GET", "/health", headers={"host": "api.internal"})[0] == 200
            assert conn.request("GET", "/health", headers={"host": "127.0.0.1"})[0] == 400
    with ServerThread(create_app(llm_engine, allowed_hosts=["*"]), port=0) as srv:
        assert httpx.get(srv.url + "/health", headers={"host": "anything.example"}).status_code == 200


def test_body_over_the_limit_is_413_before_it_is_parsed(guarded):
    big = json.dumps(chat(messages=[{"role": "user", "content": "pump " * 20_000}])).encode()
    assert len(big) > 64 * 1024
    with KeepAlive(guarded.url) as conn:
        status, _, resp = conn.request("POST", CHAT, big, headers=AUTH)
        assert status == 413 and resp["error"]["code"] == "request_too_large"
        assert str(64 * 1024) in resp["error"]["message"]
        assert conn.request("GET", "/health")[0] == 200
    # chunked upload: no Content-Length, counted as it arrives
    resp = httpx.post(guarded.url + CHAT, content=iter([big[i:i + 8192] for i in range(0, len(big), 8192)]),
                      headers={**AUTH, "content-type": "application/json"}, timeout=60)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large"
    # a bogus Content-Length is refused too (by uvicorn's HTTP parser, before the app)
    import socket

    with socket.create_connection(("127.0.0.1", guarded.port), timeout=30) as sock:
        sock.sendall(f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n{{}}".encode())
        assert sock.recv(4096).split(b"\r\n", 1)[0] == b"HTTP/1.1 400 Bad Request"


def test_serve_config_limits_reach_the_app(readable_llm_dir):
    import ragtune as rt

    dep = rt.deploy.builtin(max_request_bytes=2048, dtype="fp32", device="cpu").deploy(str(readable_llm_dir))
    try:
        big = {"messages": [{"role": "user", "content": "x" * 4096}]}
        assert httpx.post(dep.url + CHAT, json=big, timeout=60).status_code == 413
        assert httpx.post(dep.url + CHAT, json=chat(), timeout=60).status_code == 200
    finally:
        dep.stop()


# -- embeddings ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def embed_server(tiny_embedder_dir):
    from ragtune.serve.app import create_app
    from ragtune.serve.server import ServeConfig, ServerThread, build_engine

    engine = build_engine(ServeConfig(model=str(tiny_embedder_dir), device="cpu"))
    with ServerThread(create_app(engine, max_embedding_inputs=4), port=0) as srv:
        srv.engine = engine
        yield srv


BAD_EMBEDDING_REQUESTS = [
    ("empty-string", {"input": ""}, "input", "empty string"),
    ("blank-string", {"input": "   "}, "input", "empty string"),
    ("empty-in-list", {"input": ["pump", ""]}, "input.1", "empty string"),
    ("empty-list", {"input": []}, "input", "must not be empty"),
    ("too-many", {"input": ["a", "b", "c", "d", "e"]}, "input", "at most 4"),
    ("token-ids", {"input": [1, 2, 3]}, "input.0", "valid string"),
    ("number", {"input": 3}, "input", "valid"),
    ("surrogate", {"input": "\ud800"}, "input", "unpaired surrogate"),
    ("dimensions-too-many", {"input": "pump", "dimensions": 33}, "dimensions", "32 dimensions"),
    ("dimensions-zero", {"input": "pump", "dimensions": 0}, "dimensions", "greater than or equal to 1"),
    ("dimensions-bool", {"input": "pump", "dimensions": True}, "dimensions", "valid integer"),
    ("encoding_format-unknown", {"input": "pump", "encoding_format": "binary"}, "encoding_format",
     "input should be"),
    ("input_type-unknown", {"input": "pump", "input_type": "search_query"}, "input_type", "input should be"),
    ("input_type-number", {"input": "pump", "input_type": 1}, "input_type", "input should be"),
    ("unknown-field", {"input": "pump", "truncate": True}, "truncate", "unrecognized"),
    ("too-long", {"input": "pump " * 400}, "input", "limit"),
    ("model-unknown", {"input": "pump", "model": "text-embedding-3-small"}, "model", "does not exist"),
]


@pytest.mark.parametrize("body, param, words", [c[1:] for c in BAD_EMBEDDING_REQUESTS],
                         ids=[c[0] for c in BAD_EMBEDDING_REQUESTS])
def test_bad_embedding_request_is_a_4xx_naming_the_field(embed_server, body, param, words):
    with KeepAlive(embed_server.url) as conn:
        status, _, resp = conn.request("POST", EMBEDDINGS, body)
        assert 400 <= status < 500, resp
        assert resp["error"]["param"] == param and words.lower() in resp["error"]["message"].lower(), resp
        assert conn.request("GET", "/health")[0] == 200


def test_embedding_neutral_fields_accepted(embed_server):
    ok = httpx.post(embed_server.url + EMBEDDINGS, json={"input": ["pump", "valve"], "dimensions": 32, "user": "u"},
                    timeout=60)
    assert ok.status_code == 200 and len(ok.json()["data"]) == 2


# -- a client that leaves mid-stream -------------------------------------------------------------------------
def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "non-streaming"])
def test_abandoned_request_is_cancelled_and_frees_the_batcher(llm_server, llm_engine, stream):
    """Seen before: the next request waited 106 s for a generation nobody read. A 900-token request
    is abandoned after its first chunks (streaming) or after 0.3 s (non-streaming); its row must be
    dropped within a few decoding steps, and a short request right after must not wait for it."""
    from ragtune.engine.builtin import SamplingParams

    start = llm_engine.stats()
    t0 = time.perf_counter()
    full = llm_engine.generate([MSGS], SamplingParams(max_tokens=300))[0]
    per_token = (time.perf_counter() - t0) / full.completion_tokens
    body = {"messages": MSGS, "max_tokens": 900, "stream": stream}
    if stream:
        with httpx.Client(base_url=llm_server.url, timeout=60) as client:
            with client.stream("POST", CHAT, json=body) as resp:
                lines = resp.iter_lines()
                got = [next(lines) for _ in range(6)]   # a few SSE lines, then hang up
            assert any('"content"' in line for line in got)
    else:
        def post():
            try:
                httpx.post(llm_server.url + CHAT, json=body, timeout=0.3)
            except httpx.TimeoutException:
                pass   # httpx closes the connection on timeout: the client is gone
        t = threading.Thread(target=post)
        t.start()
        t.join()
    assert _wait_for(lambda: llm_engine.stats()["cancelled"] == start["cancelled"] + 1, timeout=30)
    dropped = llm_engine.stats()["cancelled_tokens"] - start["cancelled_tokens"]
    assert dropped < 450, f"the abandoned row ran {dropped} of 900 tokens"
    t1 = time.perf_counter()
    resp = httpx.post(llm_server.url + CHAT, json=chat(max_tokens=4), timeout=60)
    waited = time.perf_counter() - t1
    assert resp.status_code == 200
    assert waited < 450 * per_token + 5, f"waited {waited:.1f}s (a 900-token run takes ~{900 * per_token:.1f}s)"


def test_cancelled_future_in_the_queue_never_runs(llm_engine):
    """The engine itself: a request cancelled before its batch starts is skipped, and one cancelled
    during decoding ends with finish_reason 'cancelled' while its batch-mates finish normally."""
    from ragtune.engine.builtin import SamplingParams

    ids = llm_engine.encode_chat(MSGS)
    before = llm_engine.stats()
    long = llm_engine.submit(ids, SamplingParams(max_tokens=600), on_delta=lambda d: None)
    mate = llm_engine.submit(ids, SamplingParams(max_tokens=20))
    assert _wait_for(lambda: llm_engine.stats()["batches"] > before["batches"], 10)   # decoding started
    assert long.cancel()
    assert mate.result(timeout=60).completion_tokens == 20
    assert _wait_for(lambda: llm_engine.stats()["cancelled"] == before["cancelled"] + 1, 30)
    queued = llm_engine.submit(ids, SamplingParams(max_tokens=5))
    queued.cancel()
    after = llm_engine.submit(ids, SamplingParams(max_tokens=3)).result(timeout=60)
    assert after.completion_tokens == 3
    with pytest.raises(concurrent.futures.CancelledError):
        queued.result(timeout=0)


def test_keepalive_helper_detects_a_closed_connection(llm_server):
    """The helper is what the keep-alive assertions rely on: it must fail when the server closes."""
    with KeepAlive(llm_server.url) as conn:
        with pytest.raises(ServerClosed):
            conn.request("GET", "/health", headers={"connection": "close"})
