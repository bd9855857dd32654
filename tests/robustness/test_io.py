"""Atomic writes when the writer is killed: SIGTERM cleans up at once (the CLI turns it into an
exception), SIGKILL leaves a temp that the next write of the same path removes, and a live
writer's temp is never touched."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ragtune.core.io import atomic_dir, atomic_write_json, atomic_write_text, sweep_stale_temps

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ragtune.core.errors import sigterm_as_interrupt
    from ragtune.core.io import atomic_dir, atomic_open
    target, kind = Path(sys.argv[1]), sys.argv[2]
    try:
        with sigterm_as_interrupt():
            if kind == "file":
                with atomic_open(target) as fh:
                    fh.write("half of the ")
                    fh.flush()
                    print("writing", flush=True)
                    time.sleep(60)
            else:
                with atomic_dir(target) as tmp:
                    (tmp / "shard-1").write_text("x")
                    print("writing", flush=True)
                    time.sleep(60)
    except KeyboardInterrupt:
        sys.exit(143)
""")


def start_writer(target: Path, kind: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), kind], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def temps(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_sigterm_removes_the_temp_at_once(tmp_path, kind):
    target = tmp_path / ("out.json" if kind == "file" else "model")
    proc = start_writer(target, kind)
    assert len(temps(target)) == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert temps(target) == [] and not target.exists()


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_sigkill_leftover_is_swept_by_the_next_write_and_live_writers_are_spared(tmp_path, kind):
    target = tmp_path / ("out.json" if kind == "file" else "model")
    dead = start_writer(target, kind)
    dead.kill()
    dead.wait(timeout=30)
    left = temps(target)
    assert len(left) == 1 and str(dead.pid) in left[0]          # the kill left its temp behind
    live = start_writer(target, kind)                           # another writer, still running
    try:
        if kind == "file":
            atomic_write_json(target, {"ok": True})
            assert target.read_text().strip().startswith("{")
        else:
            with atomic_dir(target) as tmp:
                (tmp / "done").write_text("y")
            assert (target / "done").exists()
        remaining = temps(target)
        assert remaining == [n for n in remaining if str(live.pid) in n] and len(remaining) == 1
    finally:
        live.kill()
        live.wait(timeout=30)
    assert [p.name for p in sweep_stale_temps(target)] == remaining
    assert temps(target) == []


def test_sweep_spares_other_hosts_and_unrelated_names(tmp_path):
    target = tmp_path / "a.json"
    other_host = tmp_path / ".a.json.otherhost-999999.abcd.tmp"     # NFS: another node's writer
    unrelated = tmp_path / ".a.json.backup"
    sibling_of_other = tmp_path / ".a.json5.x-1.tmp"
    for p in (other_host, unrelated, sibling_of_other):
        p.write_text("x")
    atomic_write_text(target, "new")
    assert other_host.exists() and unrelated.exists() and sibling_of_other.exists()
    assert target.read_text() == "new"


def test_cli_turns_sigterm_into_a_clean_exit(tmp_path, tiny_llm_dir):
    """`ragtune serve` waits in the foreground: SIGTERM stops it with status 143 and a message, not
    a traceback (the same handler makes every command's atomic writes clean up)."""
    proc = subprocess.Popen([sys.executable, "-m", "ragtune.cli", "serve", "--model", str(tiny_llm_dir),
                             "--port", "0", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 120
    line = ""
    while time.time() < deadline and "serving" not in line:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
    assert "serving" in line, proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated" in err and "Traceback" not in err, err[-2000:]


def test_interrupts_are_deferred_to_the_end_of_an_update():
    """A signal inside the block is delivered when it ends, to the handler that was there before:
    an optimizer step and its step count happen together or not at all."""
    import os
    import signal

    from ragtune.core.errors import Terminated, interrupts_deferred, sigterm_as_interrupt

    done = []
    # Python's Ctrl-C handler, whatever this process inherited (a suite started with nohup or `&`
    # inherits SIGINT ignored)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                done.append("weights")
                done.append("step count")
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert done == ["weights", "step count"]
    with sigterm_as_interrupt(), pytest.raises(Terminated):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("after SIGTERM")
    assert done[-1] == "after SIGTERM"
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)   # a background job: SIGINT stays ignored
    try:
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)
