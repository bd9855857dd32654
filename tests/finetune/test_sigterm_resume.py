"""A long CPU run is safe: SIGTERM (what Slurm and Kubernetes send) checkpoints like Ctrl-C and says
where; `--resume` continues from that checkpoint and ends on the same loss curve as a run that was
never stopped."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from .conftest import span_items, write_json


def _cmd(tiny_llm_dir, train, out, *extra):
    return [sys.executable, "-m", "ragtune.cli", "finetune", "llm", "--base", str(tiny_llm_dir), "--train",
            str(train), "--output", str(out), "--max-steps", "40", "--per-device-train-batch-size", "2",
            "--dtype", "fp32", "--learning-rate", "1e-3", "--no-pack-shared-prefix", "--save-steps", "1000",
            "--logging-steps", "1", *extra]


def _losses(out):
    history = json.loads((out / "metrics.json").read_text())["history"]
    return [round(h["loss"], 4) for h in history if "loss" in h]


def test_sigterm_checkpoints_and_resume_ends_on_the_same_curve(tiny_llm_dir, tmp_path):
    train = write_json(tmp_path / "t.json", span_items(80, seed=7))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_cmd(tiny_llm_dir, train, ref), env=env, check=True, capture_output=True)

    out = tmp_path / "run"
    proc = subprocess.Popen(_cmd(tiny_llm_dir, train, out), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    progress = out / "progress.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (progress.exists() and len(progress.read_text().splitlines()) >= 10):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "terminated (SIGTERM) at step" in err and "continue with --resume" in err
    ckpts = sorted((out / "checkpoints").glob("step-*"))
    assert ckpts and (ckpts[-1] / "manifest.json").exists()
    stopped_at = int(ckpts[-1].name.split("-")[1])
    assert 10 <= stopped_at < 40

    done = subprocess.run(_cmd(tiny_llm_dir, train, out, "--resume", "true"), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {ckpts[-1]}" in (out / "train.log").read_text()
    assert _losses(out) == _losses(ref)                     # the same curve, step for step


def test_a_resumed_time_budget_run_keeps_its_plan_and_its_clock(tiny_llm_dir, tmp_path):
    """Killed after the time budget's plans (warm-up, 10%, 25%), a resumed run goes on with the same
    plan and LR schedule. Before, it planned again from a rate that counted the earlier evals and one
    step, and stopped the 58-min CMRC run at 52 minutes."""
    train = write_json(tmp_path / "t.json", span_items(200, seed=3))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ragtune.cli", "finetune", "llm", "--base", str(tiny_llm_dir), "--train", str(train),
           "--output", str(out), "--per-device-train-batch-size", "2", "--dtype", "fp32", "--num-train-epochs", "1000",
           "--no-pack-shared-prefix", "--save-steps", "1000", "--time-budget", "24s"]
    # the child's output goes to a file: a pipe nobody reads fills up and blocks it mid-run
    with open(tmp_path / "first.err", "w") as err_file:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err_file, text=True)
    log_file = out / "train.log"
    deadline = time.time() + 120
    while time.time() < deadline and not (log_file.exists() and log_file.read_text().count("steps planned") >= 3):
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode == 143, (tmp_path / "first.err").read_text()[-2000:]
    ckpt = max((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    clock = json.loads((ckpt / "state.json").read_text())["clock"]
    assert len(clock["budget"]["plans"]) == 3 and clock["replanned"] == [0.1, 0.25]
    stopped_at = int(ckpt.name.split("-")[1])

    done = subprocess.run(cmd + ["--resume", "true"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    text = log_file.read_text()
    assert f"resumed from {ckpt}" in text
    assert text.count("steps planned") == 3                  # no plan after the resume
    metrics = json.loads((out / "metrics.json").read_text())
    plan = metrics["time_budget"]
    assert plan["plans"] == clock["budget"]["plans"]
    assert stopped_at < metrics["steps"] and abs(metrics["steps"] - plan["planned_steps"]) <= 0.3 * plan["planned_steps"]
    assert 0.9 * 24 - 6 <= plan["actual_train_s"] <= 24 + 5          # both parts count against the budget
    assert metrics["train_runtime_s"] == pytest.approx(plan["actual_train_s"], abs=1.0)
    lrs = [h["lr"] for h in metrics["history"] if "lr" in h]
    assert lrs[-1] < 0.2 * max(lrs)                               # the cosine schedule ran to its planned end
