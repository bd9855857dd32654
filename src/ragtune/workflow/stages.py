"""Resumable stages for ``ragtune run``: a stage is skipped when its outputs exist and neither its
config nor the content of its input files changed since it last completed.

Each stage owns ``RUN_DIR/<stage>/``: its ``config.json`` (what it ran with), ``log.txt`` (its log,
kept on failure) and its outputs; ``.stage.json`` is written last and records the fingerprint, so a
stage killed half-way is never mistaken for a finished one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import RagtuneError
from ..core.io import atomic_write_json, sha256_file
from ..core.log import get_logger, log_to_file

log = get_logger(__name__)
MARKER = ".stage.json"


class StageFailed(RagtuneError):
    """A stage raised; the message says which one and where its log is."""


def fingerprint(config: Any, inputs: Iterable[str | Path]) -> str:
    """sha256 over the stage config (canonical JSON) and the content of every input file/dir."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for item in sorted(str(p) for p in inputs):
        path = Path(item)
        h.update(item.encode())
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if f.name == MARKER:
                continue
            h.update(f.name.encode())
            h.update(sha256_file(f).encode() if f.exists() else b"<missing>")
    return h.hexdigest()


@dataclass
class Stage:
    """One typed job (anything with ``execute()`` and ``to_dict()``) run in ``RUN_DIR/<name>/``."""
    name: str
    job: Any
    inputs: list[str | Path] = field(default_factory=list)     # files/dirs whose content matters
    outputs: list[str] = field(default_factory=list)           # relative to the stage dir
    secrets: dict[str, str] = field(default_factory=dict)      # job field -> env var, filled at run time

    @property
    def config(self) -> dict[str, Any]:
        """The job spec: what config.json records and the fingerprint hashes."""
        return {"job": type(self.job).__name__, "spec": self.job.to_dict()}

    def execute(self) -> Any:
        job = self.job
        if self.secrets:
            job = job.model_copy(update={k: os.environ.get(v) for k, v in self.secrets.items()})
        return job.execute()


@dataclass
class StageResult:
    name: str
    status: str              # "ran" | "skipped" | "dry-run"
    seconds: float
    dir: Path


class StageRunner:
    def __init__(self, run_dir: str | Path, force: Iterable[str] = ()):
        self.run_dir = Path(run_dir)
        self.force = set(force)
        self.results: list[StageResult] = []
        self.stopped: str | None = None     # the stage of a dry run, after which nothing runs

    def stage_dir(self, name: str) -> Path:
        return self.run_dir / name

    def is_done(self, stage: Stage, fp: str) -> bool:
        marker = self.stage_dir(stage.name) / MARKER
        if not marker.exists():
            return False
        try:
            recorded = json.loads(marker.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return False
        return recorded.get("fingerprint") == fp and all(
            (self.stage_dir(stage.name) / o).exists() for o in stage.outputs)

    def run(self, stage: Stage) -> StageResult:
        sdir = self.stage_dir(stage.name)
        fp = fingerprint(stage.config, stage.inputs)
        if stage.name not in self.force and self.is_done(stage, fp):
            log.info("stage %-16s skipped (outputs up to date)", stage.name)
            result = StageResult(stage.name, "skipped", 0.0, sdir)
            self.results.append(result)
            return result
        sdir.mkdir(parents=True, exist_ok=True)
        (sdir / MARKER).unlink(missing_ok=True)
        atomic_write_json(sdir / "config.json", stage.config)
        stage_log = get_logger(f"stage.{stage.name}")
        log.info("stage %-16s running -> %s", stage.name, sdir)
        started = time.time()
        with log_to_file(sdir / "log.txt") as file_handler:
            try:
                outcome = stage.execute()
            except KeyboardInterrupt:
                stage_log.error("interrupted")
                raise
            except Exception as exc:
                # the traceback goes to the stage's log file; the console gets the message only
                file_handler.handle(stage_log.makeRecord(stage_log.name, logging.ERROR, __file__, 0,
                                                         "stage failed", (), sys.exc_info()))
                raise StageFailed(f"stage '{stage.name}' failed: {exc}",
                                  hint=f"its log is {sdir / 'log.txt'}; fix the cause and re-run: finished "
                                       "stages are skipped") from exc
        from ..launch import DryRun

        if isinstance(outcome, DryRun):   # nothing ran: not marked done, and the run stops here
            log.info("stage %-16s dry run: %s written, not submitted; later stages not run", stage.name,
                     outcome.script)
            result = StageResult(stage.name, "dry-run", time.time() - started, sdir)
            self.results.append(result)
            self.stopped = stage.name
            return result
        missing = [o for o in stage.outputs if not (sdir / o).exists()]
        if missing:
            raise StageFailed(f"stage '{stage.name}' finished without writing {missing}",
                              hint=f"see {sdir / 'log.txt'}")
        seconds = time.time() - started
        # Inputs may include this stage's own earlier outputs only through other stages, so the
        # fingerprint computed before running is the one that describes what this run consumed.
        atomic_write_json(sdir / MARKER, {"fingerprint": fp, "seconds": round(seconds, 2),
                                          "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
        result = StageResult(stage.name, "ran", seconds, sdir)
        self.results.append(result)
        return result
