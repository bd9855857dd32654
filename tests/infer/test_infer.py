"""Batch inference: formats, order, resume after a real kill, remote URL with retries, clients."""
from __future__ import annotations

import http.server
import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from ragtune.core.errors import BackendError, ConfigError, DataError
from ragtune.engine.builtin import SamplingParams
from ragtune.engine.client import LocalLLM, OnlineChatModule
from ragtune.infer.runner import CHAPTER_TEMPLATE, InferConfig, item_input, partial_path, run_infer

WORDS = ["pump", "valve", "filter", "station", "pressure", "serial", "model", "north"]


def make_evalset(path, n: int):
    items = [{"id": f"q{i}", "context": f"the {WORDS[i % 8]} is in the {WORDS[(i * 3) % 8]} station " * (1 + i % 3),
              "question": f"where is the {WORDS[i % 8]} number {i}", "answers": [WORDS[(i * 3) % 8]]}
             for i in range(n)]
    path.write_text(json.dumps(items))
    return items


def test_item_formats_and_errors(tmp_path):
    kind, msgs = item_input({"context": "C", "question": "Q", "answers": ["a"]}, None)
    assert kind == "chat" and msgs[0]["content"] == CHAPTER_TEMPLATE.format(context="C", question="Q")
    assert msgs[0]["content"].startswith("Please use the original text of the following paragraph")
    assert item_input({"instruction": "I", "input": "X"}, None) == ("chat", [{"role": "user", "content": "I\nX"}])
    conv = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "ref"}]
    assert item_input({"messages": conv}, None) == ("chat", conv[:1])
    assert item_input({"prompt": "raw text"}, None) == ("raw", "raw text")
    assert item_input({"q": "x"}, "Q: {q}")[1][0]["content"] == "Q: x"
    with pytest.raises(DataError, match=r"file ev.json, record 3, field 'context'"):
        item_input({"question": "q"}, None, file="ev.json", record=3)
    with pytest.raises(DataError, match=r"record 1, field 'topic'"):
        item_input({"q": "x"}, "{topic}", file="ev.json", record=1)
    with pytest.raises(DataError, match="needs"):
        item_input({"foo": 1}, None)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl, record 1: line 2"):
        run_infer(InferConfig(evalset=str(bad), output=str(tmp_path / "o.json"), model="x"))


def test_local_infer_in_order_and_equal_to_engine(tmp_path, llm_engine):
    items = make_evalset(tmp_path / "ev.json", 7)
    cfg = InferConfig(evalset=str(tmp_path / "ev.json"), output=str(tmp_path / "preds.json"), max_tokens=6,
                      batch_size=3)
    rows = run_infer(cfg, engine=llm_engine, show_progress=False)
    saved = json.loads((tmp_path / "preds.json").read_text())
    assert saved == rows and [r["id"] for r in rows] == [it["id"] for it in items]
    expected = llm_engine.generate([CHAPTER_TEMPLATE.format(**it) for it in items], SamplingParams(max_tokens=6))
    assert [r["prediction"] for r in rows] == [c.text for c in expected]
    assert all(r["answers"] == it["answers"] for r, it in zip(rows, items))
    assert not partial_path(cfg.output).exists()  # the side file is gone once complete


def test_resume_after_real_kill(tmp_path, readable_llm_dir, llm_engine):
    """Kill `ragtune infer` (SIGKILL) mid-run, rerun: every item once, same predictions as a clean run."""
    n = 40
    items = make_evalset(tmp_path / "ev.json", n)
    out = tmp_path / "preds.json"
    args = [sys.executable, "-m", "ragtune.cli", "infer", "--model", str(readable_llm_dir), "--evalset",
            str(tmp_path / "ev.json"), "--output", str(out), "--max-tokens", "8", "--batch-size", "2",
            "--dtype", "fp32", "--device", "cpu", "--quiet"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    side = partial_path(out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if side.exists() and len(side.read_text().splitlines()) >= 1 + 6:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be interrupted: " + proc.stdout.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(side.read_text().splitlines()) - 1
    assert 6 <= done_before < n and not out.exists()

    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming" in result.stderr and f"{done_before} of {n}" in result.stderr
    rows = json.loads(out.read_text())
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(n)]  # each item once, in order
    clean = llm_engine.generate([CHAPTER_TEMPLATE.format(**it) for it in items], SamplingParams(max_tokens=8))
    assert [r["prediction"] for r in rows] == [c.text for c in clean]


def test_resume_tolerates_torn_line_and_rejects_other_settings(tmp_path, llm_engine):
    make_evalset(tmp_path / "ev.json", 5)
    cfg = InferConfig(evalset=str(tmp_path / "ev.json"), output=str(tmp_path / "p.json"), max_tokens=4, batch_size=2)
    seen: list[int] = []

    def fail_after_two(index: int) -> None:
        seen.append(index)
        if len(seen) == 2:
            raise KeyboardInterrupt  # an interruption after two items were recorded

    with pytest.raises(KeyboardInterrupt):
        run_infer(cfg, engine=llm_engine, show_progress=False, on_item=fail_after_two)
    side = partial_path(cfg.output)
    with open(side, "a") as fh:
        fh.write('{"index": 4, "predic')  # torn write of a killed process
    with pytest.raises(ConfigError, match="other data or settings"):
        run_infer(cfg.model_copy(update={"max_tokens": 5}), engine=llm_engine, show_progress=False)
    recorded: list[int] = []
    rows = run_infer(cfg, engine=llm_engine, show_progress=False, on_item=recorded.append)
    assert sorted(recorded + seen) == list(range(5)) and len(rows) == 5  # no item twice, none lost
    again = run_infer(cfg.model_copy(update={"restart": True}), engine=llm_engine, show_progress=False)
    assert [r["prediction"] for r in again] == [r["prediction"] for r in rows]


def test_remote_infer_against_real_server(tmp_path, llm_server, llm_engine):
    items = make_evalset(tmp_path / "ev.json", 6)
    items.append({"prompt": "the valve model"})
    (tmp_path / "ev.json").write_text(json.dumps(items))
    cfg = InferConfig(evalset=str(tmp_path / "ev.json"), output=str(tmp_path / "remote.json"), url=llm_server.url,
                      max_tokens=6, concurrency=4)
    rows = run_infer(cfg, show_progress=False)
    local = run_infer(cfg.model_copy(update={"url": None, "output": str(tmp_path / "local.json")}),
                      engine=llm_engine, show_progress=False)
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in local]
    assert rows[-1]["prediction"] == llm_engine.generate(["the valve model"], SamplingParams(max_tokens=6), raw=True)[0].text


class Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first `fail` POSTs, then a valid chat completion."""
    fail, calls = 2, 0

    def do_POST(self):
        type(self).calls += 1
        self.rfile.read(int(self.headers["content-length"]))
        if type(self).calls <= type(self).fail:
            code, body = 503, {"error": {"message": "overloaded", "type": "server_error"}}
        elif self.headers.get("authorization") != "Bearer envkey":
            code, body = 401, {"error": {"message": "bad key", "type": "invalid_request_error"}}
        else:
            code, body = 200, {"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def test_online_client_retries_with_backoff_then_fails_clearly(monkeypatch):
    monkeypatch.setenv("RAGTUNE_API_KEY", "envkey")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    try:
        Flaky.fail, Flaky.calls = 2, 0
        llm = OnlineChatModule(base_url=url, model="m", retries=3, backoff=0.01)
        assert llm("hi") == "ok" and Flaky.calls == 3
        Flaky.fail, Flaky.calls = 10, 0
        with pytest.raises(BackendError, match=r"failed after 3 attempts: HTTP 503: overloaded"):
            OnlineChatModule(base_url=url, model="m", retries=2, backoff=0.01)("hi")
        Flaky.fail, Flaky.calls = 0, 0
        with pytest.raises(BackendError, match="rejected the request: HTTP 401: bad key"):
            OnlineChatModule(base_url=url, model="m", api_key="wrong", retries=3)("hi")
        assert Flaky.calls == 1  # a 4xx is not retried
    finally:
        srv.shutdown()


def test_clients_share_one_interface(llm_server, llm_engine):
    remote = OnlineChatModule(base_url=llm_server.url + "/v1", max_tokens=6)
    local = LocalLLM(llm_engine, max_tokens=6)
    msgs = [{"role": "user", "content": "what is the pump"}]
    assert remote("what is the pump") == local("what is the pump") == local(msgs)
    assert remote.model == llm_engine.name  # discovered from /v1/models
    assert remote.batch(["a pump", "a valve"]) == local.batch(["a pump", "a valve"])
    plain = remote.chat("what is the pump")["usage"]["prompt_tokens"]
    with_system = remote.prompt("You are a helpful assistant.").chat("what is the pump")["usage"]["prompt_tokens"]
    assert with_system > plain  # the system prompt reached the shared prompt builder
    with pytest.raises(ConfigError, match="unknown generation setting"):
        local("x", max_new_tokens=3)
    other = LocalLLM(llm_engine, max_tokens=6)
    local.prompt(dict(system="You are a helpful assistant.", drop_builtin_system=True))
    assert llm_engine.prompt.system is None      # the engine keeps its default; the client has its own
    assert local("what is the pump") == remote("what is the pump")
    assert other("what is the pump") != local("what is the pump")


def test_two_clients_of_one_engine_keep_their_own_system_prompts(llm_engine):
    """Prompt settings travel with each request: no client overwrites another's (issue: three
    places used to mutate engine.prompt_cfg)."""
    from ragtune.core.prompt import build_prompt, encode_prompt
    from ragtune.engine.base import SamplingParams

    a = LocalLLM(llm_engine, prompt="You are pirate A.", max_tokens=5)
    b = LocalLLM(llm_engine, prompt="You are robot B.", max_tokens=5)
    outs = {}
    for name, client, system in (("a", a, "You are pirate A."), ("b", b, "You are robot B.")):
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": "what is the pump"}]
        expected = llm_engine.generate_ids([encode_prompt(llm_engine.tokenizer, build_prompt(
            llm_engine.tokenizer, msgs))], SamplingParams(max_tokens=5))[0].text
        outs[name] = client("what is the pump")
        assert outs[name] == expected
    assert a("what is the pump") == outs["a"]        # b's calls did not change a's prompt
    assert outs["a"] != outs["b"]
    # concurrent requests with different prompts share the batcher and still keep their prompts
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda c: c("what is the pump"), [a, b, a, b]))
    assert got == [outs["a"], outs["b"], outs["a"], outs["b"]]


def test_cli_requires_model_or_url(tmp_path):
    from ragtune.cli import main

    make_evalset(tmp_path / "ev.json", 2)
    assert main(["infer", "--evalset", str(tmp_path / "ev.json"), "--output", str(tmp_path / "o.json")]) == 1
