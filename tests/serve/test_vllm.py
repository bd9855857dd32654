"""vLLM engine: the exact command, and the supervisor against a fake `vllm` executable on PATH
(real processes, real HTTP health checks, real crashes)."""
from __future__ import annotations

import json
import os
import socket
import stat
import sys
import time

import httpx
import pytest

from ragtune.core.errors import BackendError
from ragtune.engine.vllm import VllmSupervisor, build_vllm_command

FAKE_VLLM = r'''#!{python}
"""Fake `vllm serve`: behaviour chosen by $FAKE_MODE; counts starts in $FAKE_COUNTER."""
import http.server, json, os, sys, time
argv = sys.argv[1:]
port = int(argv[argv.index("--port") + 1])
counter = os.environ["FAKE_COUNTER"]
n = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
open(counter, "w").write(str(n))
mode = os.environ.get("FAKE_MODE", "ok")
print("fake vllm start", n, "argv", argv, flush=True)
if mode == "always_crash" or (mode == "crash_twice" and n <= 2):
    print("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
    sys.exit(3)
if mode == "never_healthy":
    time.sleep(60)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"start": n}}).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", port), H)
if mode == "die_after_healthy" and n == 1:
    import threading; threading.Timer(1.0, lambda: os._exit(9)).start()
srv.serve_forever()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def fake_vllm(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "vllm"
    exe.write_text(FAKE_VLLM.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_COUNTER", str(tmp_path / "starts"))
    return tmp_path


def supervisor(tmp_path, **kw) -> VllmSupervisor:
    port = free_port()
    cmd = build_vllm_command("/models/base", served_name="m", port=port)
    return VllmSupervisor(cmd, host="127.0.0.1", port=port, log_path=tmp_path / "vllm.log", poll_s=0.05, **kw)


def test_command_plain_and_with_lora(tmp_path):
    assert build_vllm_command("/m/merged", served_name="run1", port=8001) == [
        "vllm", "serve", "/m/merged", "--host", "127.0.0.1", "--port", "8001", "--served-model-name", "run1"]
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 24}))
    cmd = build_vllm_command("/m/base", served_name="run1", host="0.0.0.0", port=9000, adapter=str(adapter),
                             max_model_len=4096, dtype="bf16", extra_args=["--gpu-memory-utilization", "0.8"])
    assert cmd == ["vllm", "serve", "/m/base", "--host", "0.0.0.0", "--port", "9000",
                   "--served-model-name", "run1-base", "--enable-lora", "--lora-modules", f"run1={adapter}",
                   "--max-lora-rank", "32", "--dtype", "bfloat16", "--max-model-len", "4096",
                   "--gpu-memory-utilization", "0.8"]


def test_vllm_server_builds_command_from_finetune_dir(tmp_path, tiny_llm_dir):
    from ragtune.engine.vllm import VllmEngine, VllmSettings

    out = tmp_path / "run7"
    (out / "adapter").mkdir(parents=True)
    (out / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 8, "base_model_name_or_path": "x"}))
    (out / "ragtune_finetune.json").write_text(json.dumps({"base_model": str(tiny_llm_dir)}))
    cmd, name = VllmEngine.command(str(out), settings=VllmSettings(), name=None, host="127.0.0.1", port=8123,
                                   api_key="secret")
    assert name == "run7"
    assert cmd == ["vllm", "serve", str(tiny_llm_dir), "--host", "127.0.0.1", "--port", "8123",
                   "--served-model-name", "run7-base", "--enable-lora", "--lora-modules",
                   f"run7={out / 'adapter'}", "--max-lora-rank", "8"]
    assert "secret" not in " ".join(cmd)   # the key goes through the environment, never argv or the log


def test_vllm_deploy_through_the_engine_registry(fake_vllm, tiny_llm_dir, tmp_path, monkeypatch):
    """`rt.deploy.vllm` / `ragtune serve --engine vllm` start the supervised server; the API key
    reaches it through VLLM_API_KEY and is in no log."""
    import ragtune as rt

    monkeypatch.setenv("FAKE_MODE", "ok")
    dep = rt.deploy.vllm(api_key="sekret", log_dir=str(tmp_path / "logs")).deploy(str(tiny_llm_dir))
    try:
        assert httpx.get(dep.url + "/health", timeout=5).status_code == 200
        assert dep.engine is None and dep.model_name == tiny_llm_dir.name
    finally:
        dep.stop()
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert "fake vllm start" in logs and "sekret" not in logs


def test_supervisor_starts_waits_for_health_and_stops(fake_vllm):
    sup = supervisor(fake_vllm).start()
    try:
        assert httpx.get(sup.url + "/health").json() == {"start": 1}
        assert sup.starts == 1 and sup.restarts == 0
    finally:
        sup.stop()
    assert sup.proc.poll() is not None  # really terminated
    assert "fake vllm start 1" in (fake_vllm / "vllm.log").read_text()


def test_supervisor_restarts_crashes_within_budget(fake_vllm, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "crash_twice")
    sup = supervisor(fake_vllm, max_restarts=2).start()
    try:
        assert httpx.get(sup.url + "/health").json() == {"start": 3}
        assert sup.restarts == 2
    finally:
        sup.stop()


def test_supervisor_gives_up_with_log_tail(fake_vllm, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "always_crash")
    with pytest.raises(BackendError) as info:
        supervisor(fake_vllm, max_restarts=1).start()
    msg = str(info.value)
    assert "exited with code 3" in msg and "2 start(s)" in msg and "CUDA out of memory" in msg


def test_supervisor_health_timeout(fake_vllm, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "never_healthy")
    sup = supervisor(fake_vllm, startup_timeout=1.0)
    with pytest.raises(BackendError, match="did not become healthy"):
        sup.start()
    assert sup.proc.poll() is not None  # the hung process was terminated


def test_watcher_restarts_after_a_crash_while_serving(fake_vllm, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "die_after_healthy")
    sup = supervisor(fake_vllm, max_restarts=1).start()
    sup.watch()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(sup.url + "/health", timeout=1).json() == {"start": 2}:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert sup.restarts == 1 and httpx.get(sup.url + "/health").json() == {"start": 2}
    finally:
        sup.stop()


def test_missing_vllm_executable(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackendError, match="not on PATH"):
        supervisor(tmp_path).start()
