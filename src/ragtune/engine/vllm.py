"""The vLLM engine: ``vllm serve`` as a supervised subprocess (GPU machines).

vLLM already is an OpenAI-compatible server, so ragtune only builds its command line, starts it
with output going to a log file, waits for ``/health``, restarts it a bounded number of times when
it crashes, and raises :class:`BackendError` with the log tail when it cannot get it up. The API
key reaches vLLM through its environment (``VLLM_API_KEY``), so it is in neither the log nor ``ps``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from pydantic import Field

from ..core.errors import BackendError
from ..core.log import get_logger
from ..core.prompt import PromptConfig
from .base import ENGINES, EngineSettings, RunningServer, ServerEngine

log = get_logger(__name__)


def build_vllm_command(model_path: str, *, served_name: str, host: str = "127.0.0.1", port: int = 8000,
                       adapter: str | None = None, max_model_len: int | None = None, dtype: str = "auto",
                       extra_args: list[str] | tuple[str, ...] = (), executable: str = "vllm") -> list[str]:
    """The exact ``vllm serve`` argv. With an adapter the base model is served under its own name
    and the adapter as ``--lora-modules NAME=PATH``, so clients ask for ``NAME``."""
    cmd = [executable, "serve", str(model_path), "--host", host, "--port", str(port)]
    if adapter:
        cmd += ["--served-model-name", served_name + "-base", "--enable-lora",
                "--lora-modules", f"{served_name}={adapter}", "--max-lora-rank", str(_lora_rank(adapter))]
    else:
        cmd += ["--served-model-name", served_name]
    if dtype not in ("auto", None):
        cmd += ["--dtype", {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(dtype, dtype)]
    if max_model_len:
        cmd += ["--max-model-len", str(max_model_len)]
    return cmd + list(extra_args)


def _lora_rank(adapter: str) -> int:
    """vLLM rejects adapters above ``--max-lora-rank`` (default 16); pass the next allowed value."""
    import json

    try:
        r = int(json.loads((Path(adapter) / "adapter_config.json").read_text())["r"])
    except (OSError, ValueError, KeyError):
        return 16
    return next((v for v in (8, 16, 32, 64, 128, 256, 320, 512) if v >= r), r)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class VllmSupervisor:
    """Start, health-check and restart one ``vllm serve`` process.

    ``start()`` returns when ``/health`` answers 200; a crash before that is retried up to
    ``max_restarts`` times; afterwards :meth:`watch` (a thread) restarts it after a crash, again
    within the same budget. Every failure raises/logs with the tail of ``log_path``.
    """

    def __init__(self, cmd: list[str], *, host: str, port: int, log_path: Path, startup_timeout: float = 900,
                 max_restarts: int = 2, env: dict[str, str] | None = None, poll_s: float = 0.5):
        self.cmd, self.host, self.port, self.log_path = cmd, host, port, Path(log_path)
        self.startup_timeout, self.max_restarts, self.poll_s = startup_timeout, max_restarts, poll_s
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.starts = 0
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def _spawn(self) -> None:
        if shutil.which(self.cmd[0], path=(self.env or os.environ).get("PATH")) is None:
            raise BackendError(f"'{self.cmd[0]}' is not on PATH: vLLM is not installed",
                               hint="pip install vllm (needs a CUDA GPU), or use --engine builtin")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as logf:
            logf.write(f"\n=== ragtune: start {self.starts + 1}: {' '.join(self.cmd)}\n".encode())
            logf.flush()
            self.proc = subprocess.Popen(self.cmd, stdout=logf, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        self.starts += 1

    def _wait_healthy(self) -> None:
        import httpx

        assert self.proc is not None   # _spawn() ran first
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise _Crashed(code)
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(self.poll_s)
        self._terminate()
        raise BackendError(f"vllm did not become healthy at {self.url}/health within {self.startup_timeout:.0f}s; "
                           f"log tail ({self.log_path}):\n{log_tail(self.log_path)}")

    def start(self) -> "VllmSupervisor":
        while True:
            self._spawn()
            try:
                self._wait_healthy()
                return self
            except _Crashed as crash:
                if self.restarts >= self.max_restarts:
                    raise BackendError(
                        f"vllm exited with code {crash.code} before becoming healthy "
                        f"({self.starts} start(s), max_restarts={self.max_restarts}); log tail ({self.log_path}):\n"
                        f"{log_tail(self.log_path)}") from None
                self.restarts += 1
                log.warning("vllm exited with code %s during startup; restart %d/%d",
                            crash.code, self.restarts, self.max_restarts)

    def watch(self) -> threading.Thread:
        """Restart after crashes in the background (bounded); gives up with an error log."""
        def loop():
            while not self._stopping.is_set():
                code = self.proc.poll() if self.proc else None
                if code is not None and not self._stopping.is_set():
                    if self.restarts >= self.max_restarts:
                        log.error("vllm exited with code %s; restart budget spent. Log tail:\n%s",
                                  code, log_tail(self.log_path))
                        return
                    self.restarts += 1
                    log.warning("vllm exited with code %s; restart %d/%d", code, self.restarts, self.max_restarts)
                    try:
                        self.start_once_more()
                    except BackendError as exc:
                        log.error("%s", exc)
                        return
                self._stopping.wait(self.poll_s)

        self._watcher = threading.Thread(target=loop, name="ragtune-vllm-watch", daemon=True)
        self._watcher.start()
        return self._watcher

    def start_once_more(self) -> None:
        self._spawn()
        try:
            self._wait_healthy()
        except _Crashed as crash:
            raise BackendError(f"vllm exited with code {crash.code} while restarting; log tail:\n"
                               f"{log_tail(self.log_path)}") from None

    def _terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop(self) -> None:
        self._stopping.set()
        self._terminate()
        if self._watcher is not None:
            self._watcher.join(timeout=5)


class _Crashed(Exception):
    def __init__(self, code: int):
        super().__init__(f"exit code {code}")
        self.code = code


class VllmSettings(EngineSettings):
    """Settings of the vLLM engine (a ``vllm serve`` subprocess on a CUDA GPU)."""
    dtype: str = Field("auto", description="auto, bf16, fp16, fp32 (passed as vLLM's --dtype).")
    max_model_len: int | None = Field(None, ge=16, description="vLLM --max-model-len.")
    vllm_args: list[str] = Field(default_factory=list, description="Extra arguments passed to `vllm serve`.")
    startup_timeout: float = Field(900.0, gt=0, description="Seconds to wait for /health.")
    max_restarts: int = Field(2, ge=0, description="Restarts after a crash before giving up.")
    log_dir: str | None = Field(None, description="Where vllm-<port>.log goes (default: $RAGTUNE_HOME/logs).")


@ENGINES.register("vllm")
class VllmEngine(ServerEngine):
    """``vllm serve`` supervised: health wait, bounded restarts, the log tail on failure."""

    Settings = VllmSettings
    description = "vLLM server in a subprocess (CUDA GPU), supervised"

    @classmethod
    def command(cls, model: str, adapter: str | None = None, *, settings: VllmSettings, name: str | None,
                host: str, port: int, api_key: str | None, prompt: PromptConfig | None = None):
        """(argv, served name, source). The API key goes to vLLM as ``VLLM_API_KEY`` in its
        environment, never on the command line (which its log and ``ps`` show)."""
        from ..models import resolve_model
        from ..models.source import resolve_source

        source = resolve_source(model, adapter, name)
        model_path = str(resolve_model(source.model).path)
        if source.prompt or (prompt is not None and prompt.model_fields_set):
            log.info("vLLM applies the model's own chat template; ragtune's prompt settings (system / "
                     "drop_builtin_system) are not applied server-side: clients send the system message "
                     "(OnlineChatModule(...).prompt(system) does)")
        cmd = build_vllm_command(model_path, served_name=source.name, host=host, port=port,
                                 adapter=str(source.adapter) if source.adapter else None,
                                 max_model_len=settings.max_model_len, dtype=settings.dtype,
                                 extra_args=settings.vllm_args)
        return cmd, source.name

    @classmethod
    def start(cls, model: str, adapter: str | None = None, *, settings: EngineSettings | None = None,
              prompt: PromptConfig | None = None, name: str | None = None, host: str = "127.0.0.1",
              port: int = 0, api_key: str | None = None) -> RunningServer:
        from ..core.paths import ragtune_home

        vs = settings if isinstance(settings, VllmSettings) else VllmSettings.build(
            "vllm engine settings", **(settings.model_dump() if settings is not None else {}))
        port = port or _free_port(host)
        cmd, served = cls.command(model, adapter, settings=vs, name=name, host=host, port=port,
                                  api_key=api_key, prompt=prompt)
        log_dir = Path(vs.log_dir) if vs.log_dir else ragtune_home() / "logs"
        env = {**os.environ, "VLLM_API_KEY": api_key} if api_key else None
        sup = VllmSupervisor(cmd, host=host, port=port, log_path=log_dir / f"vllm-{port}.log",
                             startup_timeout=vs.startup_timeout, max_restarts=vs.max_restarts, env=env)
        sup.start()
        sup.watch()

        def wait() -> None:
            while sup._watcher is not None and sup._watcher.is_alive():
                time.sleep(1)
            raise BackendError(f"vllm stopped and could not be restarted; log tail:\n{log_tail(sup.log_path)}")

        server = RunningServer(sup.url, served, sup.stop, wait)
        server.supervisor = sup  # type: ignore[attr-defined]
        return server


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
