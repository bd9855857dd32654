"""Launchers: run a job in this process (``local``), as a multi-process / multi-node ``torchrun``
job, or as a Slurm batch job (``sbatch`` + state tracking). Every subprocess failure surfaces with
its exit code and the tail of its log: no pipe through ``tee`` that swallows the exit status.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from ..core.config import Config
from ..core.errors import BackendError, ConfigError
from ..core.log import get_logger

log = get_logger(__name__)


class LauncherConfig(Config):
    type: Literal["local", "torchrun", "slurm"] = Field("local", description="Where the job runs.")
    nnodes: int = Field(1, ge=1, description="Nodes.")
    nproc_per_node: int = Field(1, ge=1, description="Processes (GPUs) per node.")
    partition: str | None = Field(None, description="Slurm partition (or a comma-separated list).")
    time: str | None = Field(None, description="Slurm time limit, e.g. 04:00:00 or 1-12:00:00.")
    extra_args: list[str] = Field(default_factory=list, description="Extra #SBATCH options / torchrun flags, "
                                  "one option per item (e.g. --exclusive, --mem=64G); quoted for you.")
    master_port: int = Field(29500, ge=1, le=65535, description="Rendezvous port.")
    dry_run: bool = Field(False, description="Slurm: write and print the script, do not submit.")
    poll_seconds: float = Field(30.0, gt=0, description="Slurm: job state polling interval.")

    @field_validator("partition")
    @classmethod
    def _partition_name(cls, value: str | None) -> str | None:
        if value is not None and not _PARTITION.fullmatch(value):
            raise ValueError(f"{value!r} is not a Slurm partition name (letters, digits, '_', '-', '.', "
                             "comma-separated for several)")
        return value

    @field_validator("time")
    @classmethod
    def _time_limit(cls, value: str | None) -> str | None:
        if value is not None and not _TIME.fullmatch(value):
            raise ValueError(f"{value!r} is not a Slurm time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, "
                             "D-HH:MM:SS or UNLIMITED")
        return value

    @field_validator("extra_args")
    @classmethod
    def _one_line_each(cls, value: list[str]) -> list[str]:
        for i, arg in enumerate(value):
            if _CONTROL.search(arg):
                raise ValueError(f"extra_args[{i}] {arg!r} holds a newline or another control character: "
                                 "it would start a new line of the batch script")
            if not arg.startswith("-"):
                raise ValueError(f"extra_args[{i}] {arg!r} is not an option (it must start with '-', "
                                 "e.g. --exclusive or --mem=64G)")
        return value


# What Slurm accepts (sbatch(1) --partition, --time); anything else is refused before a script exists.
_PARTITION = re.compile(r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*")
_TIME = re.compile(r"(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d{1,2}(:\d{1,2}){0,2}|UNLIMITED|INFINITE)",
                   re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SBATCH_PLAIN = re.compile(r"[\w@%+=:,./-]+")   # needs no quotes in an #SBATCH line


def ragtune_argv(args: Sequence[str]) -> list[str]:
    """How a launched process runs ragtune itself (same interpreter, module form)."""
    return ["-m", "ragtune.cli", *args]


def torchrun_command(args: Sequence[str], cfg: LauncherConfig, *, rdzv_endpoint: str | None = None,
                     rdzv_id: str = "ragtune") -> list[str]:
    """``torchrun`` for one node (``--standalone``) or many (c10d rendezvous at ``rdzv_endpoint``)."""
    cmd = ["torchrun", f"--nnodes={cfg.nnodes}", f"--nproc_per_node={cfg.nproc_per_node}"]
    if cfg.nnodes == 1 and rdzv_endpoint is None:
        cmd.insert(1, "--standalone")
    else:
        if rdzv_endpoint is None:
            raise BackendError("a multi-node torchrun needs a rendezvous endpoint (host:port of node 0)",
                               hint="use launcher type 'slurm', which finds the head node itself")
        cmd += ["--rdzv_backend=c10d", f"--rdzv_endpoint={rdzv_endpoint}", f"--rdzv_id={rdzv_id}"]
    cmd += [a for a in cfg.extra_args if a.startswith("--")]
    return cmd + ragtune_argv(args)


def sbatch_quote(value: str) -> str:
    """One ``#SBATCH`` argument, quoted for sbatch's own parser (src/sbatch/opt.c ``_get_argument``:
    not a shell; double quotes group, a backslash escapes the next character, an unquoted ``#``
    starts a comment). A newline cannot be quoted there at all, so it is refused."""
    if _CONTROL.search(value):
        raise ConfigError(f"{value!r} holds a newline or another control character; it cannot go into "
                          "an #SBATCH line")
    if _SBATCH_PLAIN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _slurm_filename(path: str | Path) -> str:
    """``--output`` expands %j, %N ... (sbatch(1) filename patterns); a literal % is written %%."""
    return str(path).replace("%", "%%")


def sbatch_script(args: Sequence[str], cfg: LauncherConfig, *, job_name: str, log_path: str | Path,
                  workdir: str | Path) -> str:
    """A batch script that starts one torchrun per node; node 0 is the rendezvous host.

    Every value that comes from the user (paths, job name, partition, time, extra options, the
    ragtune arguments) is quoted: #SBATCH lines for sbatch's parser, the body for bash
    (:func:`shlex.quote`). The only unquoted ``$`` are this script's own variables."""
    sbatch = [("--job-name", job_name), ("--nodes", str(cfg.nnodes)), ("--ntasks-per-node", "1"),
              ("--gpus-per-node", str(cfg.nproc_per_node)), ("--output", _slurm_filename(log_path))]
    if cfg.partition:
        sbatch.append(("--partition", cfg.partition))
    if cfg.time:
        sbatch.append(("--time", cfg.time))
    lines = ["#!/bin/bash", *(f"#SBATCH {sbatch_quote(f'{key}={value}')}" for key, value in sbatch),
             *(f"#SBATCH {sbatch_quote(a)}" for a in cfg.extra_args)]
    torchrun = ["torchrun", '--nnodes="$SLURM_NNODES"', f"--nproc_per_node={cfg.nproc_per_node}",
                "--rdzv_backend=c10d", f'--rdzv_endpoint="$head_node":{cfg.master_port}',
                '--rdzv_id="$SLURM_JOB_ID"', *(shlex.quote(a) for a in ragtune_argv(args))]
    lines += ["set -euo pipefail", f"cd {shlex.quote(str(workdir))}",
              'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
              "srun " + " ".join(torchrun)]
    return "\n".join(lines) + "\n"


def log_tail(path: str | Path, lines: int = 30) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def run_logged(cmd: Sequence[str], log_path: str | Path, *, env: dict[str, str] | None = None,
               cwd: str | Path | None = None) -> None:
    """Run ``cmd`` with stdout+stderr appended to ``log_path`` and shown live, line by line, as
    INFO records of ``ragtune.launch.child`` (a progress bar's ``\r`` updates count as lines); a
    non-zero exit raises :class:`BackendError` with the exit code and the log tail."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log.info("running: %s  (log: %s)", shlex.join(cmd), log_path)
    child = get_logger("launch.child")
    with open(log_path, "ab") as fh:
        try:
            proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        except FileNotFoundError:
            raise BackendError(f"{cmd[0]} not found", hint="install it or use launcher type 'local'") from None
        assert proc.stdout is not None
        try:
            pending = b""
            while True:
                chunk = proc.stdout.read1(65536)  # type: ignore[attr-defined]  # a BufferedReader: what the child wrote so far
                if not chunk:
                    break
                fh.write(chunk)
                fh.flush()
                *lines, pending = re.split(rb"\r\n|\n|\r", pending + chunk)
                for line in lines:
                    if line.strip():
                        child.info("%s", line.decode("utf-8", errors="replace"))
            if pending.strip():
                child.info("%s", pending.decode("utf-8", errors="replace"))
            code = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait(timeout=30)
            raise
        finally:
            proc.stdout.close()
    if code != 0:
        raise BackendError(f"{shlex.join(cmd[:6])}... exited with code {code}; last lines of {log_path}:\n"
                           f"{log_tail(log_path)}")


# -- Slurm ------------------------------------------------------------------------------------------
TERMINAL_OK = {"COMPLETED"}
TERMINAL_BAD = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
                "DEADLINE"}


def submit(script: Path) -> str:
    out = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if out.returncode != 0:
        raise BackendError(f"sbatch failed (exit {out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout.strip().split(";")[0]


def job_state(job_id: str) -> str:
    out = subprocess.run(["sacct", "-j", job_id, "--format=State", "--noheader", "-P", "-X"],
                         capture_output=True, text=True)
    states = [s.strip().split()[0] for s in out.stdout.splitlines() if s.strip()]
    return states[0] if states else "PENDING"


def wait_for_job(job_id: str, log_path: Path, poll_seconds: float = 30.0) -> None:
    last = None
    while True:
        state = job_state(job_id)
        if state != last:
            log.info("slurm job %s: %s", job_id, state)
            last = state
        if state in TERMINAL_OK:
            return
        if state in TERMINAL_BAD:
            raise BackendError(f"slurm job {job_id} ended {state}; last lines of {log_path}:\n{log_tail(log_path)}")
        time.sleep(poll_seconds)


@dataclass(frozen=True)
class DryRun:
    """What a Slurm ``dry_run`` returns instead of a result: the script written (and printed), not
    submitted. ``ragtune run`` stops after the stage that returned it, with exit status 0."""
    script: Path
    text: str


# -- the one entry point -------------------------------------------------------------------------------
def launch_command(args: Sequence[str], launcher: dict[str, Any] | LauncherConfig, workdir: Path) -> DryRun | None:
    """Run ``ragtune ARGS`` under a torchrun or Slurm launcher (``local`` is the caller's own process:
    see :func:`ragtune.workflow.launching.launch_job`). Logs go to ``workdir/launcher.log``."""
    lc = launcher if isinstance(launcher, LauncherConfig) else LauncherConfig.build(**launcher)
    if lc.type == "local":
        raise BackendError("launcher 'local' runs in this process; launch_command is for torchrun and slurm")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "launcher.log"
    if lc.type == "torchrun":
        run_logged(torchrun_command(args, lc), log_path, env=_env_with_interpreter_bin())
        return None
    script = workdir / "job.sbatch"
    from ..core.io import atomic_write_text

    atomic_write_text(script, sbatch_script(args, lc, job_name=f"ragtune-{workdir.name}",
                                            log_path=log_path.resolve(), workdir=Path.cwd()))
    if lc.dry_run:
        text = script.read_text(encoding="utf-8")
        log.info("slurm dry run: wrote %s (not submitted; sbatch %s submits it)", script, shlex.quote(str(script)))
        sys.stdout.write(text)
        sys.stdout.flush()
        return DryRun(script, text)
    job = submit(script)
    log.info("submitted slurm job %s (script %s, log %s)", job, script, log_path)
    wait_for_job(job, log_path, lc.poll_seconds)
    return None


def _env_with_interpreter_bin() -> dict[str, str] | None:
    """torchrun is installed next to this interpreter (a venv's bin/), which need not be on PATH:
    the child gets that PATH; this process's environment is left alone."""
    if shutil.which("torchrun") is not None or not Path(sys.executable).with_name("torchrun").exists():
        return None
    return {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
