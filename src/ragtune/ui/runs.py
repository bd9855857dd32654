"""The Runs page's data: every run directory with its state, and one run in detail (stages,
resolved config, logs, progress), all derived from the files (see :mod:`ragtune.ui.scan`)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .procs import RUN_YAML, cli_line, process_info
from .scan import (
    CONSOLE_LOG,
    FINETUNE_MANIFEST,
    PROGRESS,
    STAGE_MARKER,
    Entry,
    age,
    flatten_numbers,
    mtime,
    newest_mtime,
    read_json,
    read_progress,
    rel,
    scan,
    tail,
    top_level,
)

# the exit codes of a run that was stopped, not broken: 130 = the CLI's "interrupted" (the trainer
# turns SIGTERM into it after checkpointing), -15/-9 = killed by the signal itself
_STOPPED_CODES = {130, -15, -9, 143, 137}


def expected_stages(run_dir: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The stages the run's config makes (name + job spec), or an error saying why not."""
    from ..core.errors import RagtuneError
    from ..workflow.run import RunConfig, build_stages

    for name in ("config.yaml", RUN_YAML):
        path = run_dir / name
        if path.is_file():
            try:
                cfg = RunConfig.from_yaml(path)
                return [{"name": s.name, "config": s.config} for s in build_stages(cfg)], None
            except RagtuneError as exc:
                return [], exc.message
            except Exception as exc:  # a config of another ragtune version: show the dirs only
                return [], f"{type(exc).__name__}: {exc}"
    return [], None


def _stage_failed(log_text: str) -> str | None:
    """The error line the stage runner logs on failure (the traceback follows it)."""
    if "stage failed" not in log_text:
        return None
    after = log_text.split("stage failed", 1)[1].strip().splitlines()
    errors = [line for line in after if re.match(r"^[A-Za-z_.]+(Error|Exception|Failed)\b", line)]
    return errors[-1] if errors else "failed (see its log)"


def stage_states(run_dir: Path, alive: bool) -> list[dict[str, Any]]:
    expected, _ = expected_stages(run_dir)
    names = [s["name"] for s in expected]
    extra = sorted(d.name for d in run_dir.iterdir() if d.is_dir() and (d / "config.json").is_file()
                   and d.name not in names) if run_dir.is_dir() else []
    specs = {s["name"]: s["config"] for s in expected}
    rows = []
    running_seen = False
    for name in names + extra:
        sdir = run_dir / name
        marker = read_json(sdir / STAGE_MARKER)
        recorded = read_json(sdir / "config.json")
        row: dict[str, Any] = {"name": name, "dir": name, "seconds": None, "finished": None, "error": None,
                               "changed": False, "log": f"{name}/log.txt" if (sdir / "log.txt").is_file() else None}
        if isinstance(marker, dict):
            row.update(state="done", seconds=marker.get("seconds"), finished=marker.get("finished"))
            # the job spec changed since it finished: the next run re-runs it
            row["changed"] = name in specs and recorded is not None and json.dumps(recorded, sort_keys=True) != \
                json.dumps(specs[name], sort_keys=True, default=str)
        elif recorded is not None:
            error = _stage_failed(tail(sdir / "log.txt", 400))
            if error:
                row.update(state="failed", error=error)
            elif alive and not running_seen:
                row["state"] = "running"
                running_seen = True
            else:
                row["state"] = "stopped"
        else:
            row["state"] = "pending"
        rows.append(row)
    return rows


def _console_error(run_dir: Path) -> str | None:
    """The CLI's own error message (``error: ...`` + hint) from the end of the console log."""
    text = tail(run_dir / CONSOLE_LOG, 60)
    last_run = text.rsplit("\n=== ", 1)[-1]
    lines = [line for line in last_run.splitlines() if line.startswith(("error:", "  hint:", "Error:"))]
    return "\n".join(lines[-2:]) or None


ACTIVE_SECONDS = 120


def recently_active(run_dir: Path) -> bool:
    """A run started outside the UI (no process.json) whose unfinished stage wrote its log or
    progress within the last two minutes: shown as "active" (the UI cannot stop it: no pid)."""
    files = [d / "log.txt" for d in run_dir.iterdir() if d.is_dir() and not (d / STAGE_MARKER).exists()] \
        if run_dir.is_dir() else []
    files += [run_dir / "finetune_llm" / "model" / PROGRESS, run_dir / "finetune_llm" / "model" / "train.log"]
    ages = [age(mtime(f)) for f in files]
    return any(a is not None and a < ACTIVE_SECONDS for a in ages)


def run_status(run_dir: Path, stages: list[dict[str, Any]], proc: dict[str, Any] | None) -> tuple[str, str | None]:
    """(state, message): running | stopping | active | finished | failed | stopped | incomplete | new."""
    if proc and proc["alive"]:
        return ("stopping" if proc.get("stop_requested") else "running"), None
    if proc is None and any(s["state"] == "running" for s in stages):
        return "active", "started outside this UI: watched from its files (stop it where it runs)"
    failed = [s for s in stages if s["state"] == "failed"]
    code = proc.get("exit_code") if proc else None
    if stages and all(s["state"] == "done" for s in stages) and code in (None, 0):
        return "finished", None
    if proc and (proc.get("stop_requested") or code in _STOPPED_CODES):
        return "stopped", None
    if failed:
        return "failed", f"stage {failed[0]['name']}: {failed[0]['error']}"
    if code not in (None, 0):
        return "failed", _console_error(run_dir) or f"exit code {code}"
    if not any(s["state"] != "pending" for s in stages):
        return "new", _console_error(run_dir)
    return "incomplete", None


def _finetune_dir(run_dir: Path) -> Path | None:
    model = run_dir / "finetune_llm" / "model"
    return model if model.is_dir() else None


def summarize(root: Path, entry: Entry) -> dict[str, Any]:
    """One row of the runs list."""
    path = entry.path
    row: dict[str, Any] = {"id": rel(root, path), "kind": entry.kind, "name": path.name}
    if entry.kind == "run":
        proc = process_info(path)
        stages = stage_states(path, bool(proc and proc["alive"]) or (proc is None and recently_active(path)))
        row["state"], row["message"] = run_status(path, stages, proc)
        row["stages_done"] = sum(s["state"] == "done" for s in stages)
        row["stages"] = len(stages)
        row["updated"] = newest_mtime(path, ("config.yaml", "process.json", CONSOLE_LOG)) or mtime(path)
        ft = _finetune_dir(path)
        if ft is not None:
            row["updated"] = max(row["updated"] or 0, mtime(ft / PROGRESS) or 0)
    elif entry.kind == "finetune":
        row["state"] = finetune_state(path)
        row["updated"] = newest_mtime(path, (PROGRESS, "train.log", FINETUNE_MANIFEST))
    elif entry.kind == "eval":
        summary = read_json(path / "summary.json") or {}
        row["state"] = "finished"
        row["name"] = f"{summary.get('name', path.name)} ({path.name})"
        row["updated"] = mtime(path / "summary.json")
    else:
        row["state"] = "finished"
        row["updated"] = mtime(path)
    return row


def finetune_state(path: Path) -> str:
    if (path / FINETUNE_MANIFEST).is_file():
        return "finished"
    if (seconds := age(newest_mtime(path, (PROGRESS, "train.log")))) is not None and seconds < 120:
        return "active"             # written to in the last two minutes (started outside the UI)
    return "incomplete"


def list_runs(root: Path) -> list[dict[str, Any]]:
    rows = [summarize(root, e) for e in top_level(scan(root)) if e.path != root or e.kind != "finetune"]
    return sorted(rows, key=lambda r: -(r.get("updated") or 0))


def list_kind(root: Path, kind: str) -> list[dict[str, Any]]:
    """Every directory of one kind anywhere under root (eval runs and models inside runs too)."""
    out = []
    for e in scan(root):
        if e.kind != kind:
            continue
        item: dict[str, Any] = {"id": rel(root, e.path), "path": str(e.path)}
        if kind == "eval":
            s = read_json(e.path / "summary.json") or {}
            item.update(name=s.get("name"), run_id=s.get("run_id"), n_items=s.get("n_items"),
                        evalset=s.get("evalset"), metrics=sorted(s.get("metrics") or {}))
        out.append(item)
    return out


def models(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Fine-tuned LLMs (finished fine-tune outputs, also inside runs) and embedders under root."""
    llms = []
    for e in scan(root):
        for d in ([e.path] if e.kind == "finetune" else [_finetune_dir(e.path)] if e.kind == "run" else []):
            if d is not None and (d / FINETUNE_MANIFEST).is_file():
                manifest = read_json(d / FINETUNE_MANIFEST) or {}
                llms.append({"id": rel(root, d), "path": str(d), "base": manifest.get("base_model"),
                             "method": manifest.get("method")})
    embedders = [{"id": rel(root, e.path), "path": str(e.path)} for e in scan(root) if e.kind == "embedder"]
    return {"llm": llms, "embedder": embedders}


# -- one run in detail ------------------------------------------------------------------------------
def _sweep(root: Path, report: Any) -> dict[str, Any] | None:
    """sweep.json with each run's id (its page link) and every numeric value flattened, so
    metrics of later ragtune versions show up as columns."""
    if not isinstance(report, dict) or not isinstance(report.get("runs"), list):
        return None
    rows = []
    for r in report["runs"]:
        if not isinstance(r, dict):
            continue
        values = dict(flatten_numbers({k: v for k, v in r.items() if k not in ("run_dir", "name")}))
        run_dir = Path(str(r.get("run_dir", "")))
        run_dir = run_dir if run_dir.is_absolute() else Path.cwd() / run_dir
        try:
            run_id = rel(root, run_dir.resolve())
        except ValueError:
            run_id = None
        rows.append({"name": r.get("name"), "id": run_id, "values": values})
    return {"rank_by": report.get("rank_by"), "grid": report.get("grid"), "runs": rows}


def logs_of(path: Path) -> list[str]:
    """Log files of a run dir or fine-tune dir, relative to it, most useful first."""
    names = [CONSOLE_LOG, "train.log"]
    found = [n for n in names if (path / n).is_file()]
    for sub in sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []:
        if (sub / "log.txt").is_file():
            found.append(f"{sub.name}/log.txt")
    ft = path / "finetune_llm" / "model" / "train.log"
    if ft.is_file():
        found.append("finetune_llm/model/train.log")
    ll = path / "finetune_llm" / "model.launch" / "launcher.log"
    if ll.is_file():
        found.append("finetune_llm/model.launch/launcher.log")
    return found


_SHOWN = (".md", ".html", ".png", ".svg", ".json", ".jsonl", ".csv", ".txt", ".log", ".yaml")


def output_files(path: Path, limit: int = 60) -> list[str]:
    """Files a run wrote that the page links to (reports, charts, metrics JSON of any ragtune
    command, including ones this UI has no page for yet), relative to the run directory."""
    found: list[str] = []
    for sub in (path, path / "report", path / "finetune_llm" / "model"):
        if not sub.is_dir():
            continue
        for f in sorted(sub.iterdir()):
            if f.is_file() and f.suffix in _SHOWN and not f.name.startswith("."):
                found.append(str(f.relative_to(path)))
    return found[:limit]


def checkpoints(model_dir: Path | None) -> list[str]:
    if model_dir is None or not (model_dir / "checkpoints").is_dir():
        return []
    steps = []
    for d in (model_dir / "checkpoints").iterdir():
        m = re.fullmatch(r"step-(\d+)", d.name)
        if m and d.is_dir():
            steps.append(int(m.group(1)))
    return [f"step-{s}" for s in sorted(steps)]


def detail(root: Path, path: Path, kind: str, progress_offset: int = 0, log_name: str | None = None,
           log_lines: int = 200) -> dict[str, Any]:
    out: dict[str, Any] = {"id": rel(root, path), "kind": kind, "name": path.name, "path": str(path)}
    model_dir: Path | None = None
    if kind == "run":
        proc = process_info(path)
        stages = stage_states(path, bool(proc and proc["alive"]) or (proc is None and recently_active(path)))
        out["state"], out["message"] = run_status(path, stages, proc)
        out["stages"] = stages
        _, out["config_error"] = expected_stages(path)
        cfg_file = path / "config.yaml" if (path / "config.yaml").is_file() else path / RUN_YAML
        out["config"] = cfg_file.read_text(encoding="utf-8") if cfg_file.is_file() else None
        yaml_path = path / RUN_YAML if (path / RUN_YAML).is_file() else path / "config.yaml"
        out["yaml"] = str(yaml_path) if yaml_path.is_file() else None
        out["process"] = proc
        out["cli"] = proc["cli"] if proc and proc.get("cli") else (
            cli_line(yaml_path, Path.cwd()) if yaml_path.is_file() else None)
        model_dir = _finetune_dir(path)
        out["reports"] = [f"report/{n}" for n in ("report.html", "report.md") if (path / "report" / n).is_file()]
        out["evals"] = [rel(root, d / "result") for d in sorted(path.glob("eval_*")) if (d / "result" / "summary.json").is_file()]
    elif kind == "finetune":
        model_dir = path
        out["state"] = finetune_state(path)
        cfg = path / "config.yaml"
        out["config"] = cfg.read_text(encoding="utf-8") if cfg.is_file() else None
    elif kind == "eval":
        out["state"] = "finished"
        out["summary"] = read_json(path / "summary.json")
        out["reports"] = [n for n in ("report.html", "report.md") if (path / n).is_file()]
    elif kind == "retrieval":
        out["state"] = "finished"
        out["retrieval"] = read_json(path / "retrieval.json")
    elif kind == "sweep":
        out["state"] = "finished"
        out["sweep"] = _sweep(root, read_json(path / "sweep.json"))
    out["files"] = output_files(path)
    if model_dir is not None:
        out["model_dir"] = rel(root, model_dir)
        out["progress"] = read_progress(model_dir / PROGRESS, progress_offset)
        out["checkpoints"] = checkpoints(model_dir)
        out["metrics"] = read_json(model_dir / "metrics.json")
        if isinstance(out["metrics"], dict):
            out["metrics"].pop("history", None)
    out["logs"] = logs_of(path)
    chosen = log_name if log_name in out["logs"] else _default_log(out)
    out["log"] = {"name": chosen, "text": tail(path / chosen, log_lines) if chosen else ""}
    return out


def _default_log(d: dict[str, Any]) -> str | None:
    """The running (or failed) stage's log, else the console log."""
    for s in d.get("stages") or []:
        if s["state"] in ("running", "failed") and s.get("log"):
            return s["log"]
    return d["logs"][0] if d["logs"] else None
