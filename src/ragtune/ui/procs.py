"""Start, stop and resume ``ragtune run`` as its own process (never inside the web server).

A run started here is ``python -m ragtune.cli run RUN_DIR/run.yaml`` in its own session (process
group), with stdout+stderr in ``RUN_DIR/console.log``. ``RUN_DIR/process.json`` records the pid,
the exact command and, when it ends, the exit code: the UI reads it back from disk, so a restarted
UI server or a second tab sees the same state. Stop = SIGTERM to the process group (the trainer
checkpoints on SIGTERM and says where); resume = the same command again (finished stages are
skipped, the fine-tune continues from its last checkpoint: ``resume: auto``).
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..core.io import atomic_write_json
from ..core.log import get_logger
from .scan import CONSOLE_LOG, PROCESS_FILE, read_json

log = get_logger(__name__)
RUN_YAML = "run.yaml"
_lock = threading.Lock()


def command(yaml_path: Path) -> list[str]:
    return [sys.executable, "-m", "ragtune.cli", "run", str(yaml_path)]


def cli_line(yaml_path: Path, cwd: Path) -> str:
    """What a user types to do the same by hand."""
    return f"cd {shlex.quote(str(cwd))} && ragtune run {shlex.quote(str(yaml_path))}"


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks (/proc/PID/stat field 22): a pid plus this value
    names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19]) if fields[0] != "Z" else None   # a zombie has finished


def is_alive(info: dict[str, Any] | None) -> bool:
    if not info or not isinstance(info.get("pid"), int) or info.get("exit_code") is not None:
        return False
    pid = info["pid"]
    if Path("/proc").is_dir():
        ticks = _start_ticks(pid)
        return ticks is not None and info.get("start_ticks") in (None, ticks)
    try:                                   # pragma: no cover - non-Linux
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def process_info(run_dir: Path) -> dict[str, Any] | None:
    info = read_json(run_dir / PROCESS_FILE)
    if not isinstance(info, dict):
        return None
    info["alive"] = is_alive(info)
    return info


def _update(run_dir: Path, **changes: Any) -> None:
    with _lock:
        info = read_json(run_dir / PROCESS_FILE) or {}
        info.update(changes)
        atomic_write_json(run_dir / PROCESS_FILE, info)


def start(run_dir: Path, yaml_path: Path, cwd: Path) -> dict[str, Any]:
    """Spawn the run; returns its process.json. Refuses when this run is already running."""
    current = process_info(run_dir)
    if current and current["alive"]:
        raise ConfigError(f"{run_dir.name} is already running (pid {current['pid']}); stop it first")
    argv = command(yaml_path)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(run_dir / CONSOLE_LOG, "ab") as console:    # the child keeps its own copy of the fd
        console.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv)}\n".encode())
        console.flush()
        proc = subprocess.Popen(argv, stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, env=env, start_new_session=True)
    info = {"pid": proc.pid, "pgid": proc.pid, "start_ticks": _start_ticks(proc.pid), "argv": argv,
            "cwd": str(cwd), "yaml": str(yaml_path), "cli": cli_line(yaml_path, cwd),
            "started": time.time(), "exit_code": None, "ended": None, "stop_requested": None}
    with _lock:
        atomic_write_json(run_dir / PROCESS_FILE, info)
    threading.Thread(target=_reap, args=(proc, run_dir), name=f"ragtune-ui-wait-{proc.pid}", daemon=True).start()
    log.info("started %s (pid %d)", shlex.join(argv), proc.pid)
    return {**info, "alive": True}


def _reap(proc: subprocess.Popen, run_dir: Path) -> None:
    """Wait for our child and record how it ended (a UI restarted meanwhile cannot: the state is
    then read from the stages' markers and the console log)."""
    code = proc.wait()
    info = read_json(run_dir / PROCESS_FILE) or {}
    if info.get("pid") == proc.pid:
        _update(run_dir, exit_code=code, ended=time.time())


def stop(run_dir: Path, force: bool = False) -> dict[str, Any]:
    """SIGTERM (or SIGKILL with ``force``) to the run's process group."""
    info = process_info(run_dir)
    if not info or not info["alive"]:
        raise ConfigError(f"{run_dir.name} is not running")
    sig = signal.SIGKILL if force else signal.SIGTERM
    try:
        os.killpg(info["pgid"], sig)
    except ProcessLookupError:
        pass
    _update(run_dir, stop_requested=time.time(), stop_signal=sig.name)
    return {**info, "stop_requested": time.time(), "stop_signal": sig.name}


def wait(run_dir: Path, timeout: float) -> bool:
    """True when the run's process ended within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(read_json(run_dir / PROCESS_FILE)):
            return True
        time.sleep(0.1)
    return False
