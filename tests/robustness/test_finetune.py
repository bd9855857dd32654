"""`ragtune finetune llm` against lost work and planted or damaged files: real training steps on the
tiny model. Changed data or settings never resume silently; damaged checkpoints are skipped for
the newest valid one; a planted pickle never runs; NaN stops the run; SIGTERM checkpoints."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ..finetune.conftest import span_items, write_json  # noqa: E402

KW = dict(max_steps=4, save_steps=2, per_device_train_batch_size=2, dtype="fp32", merge=False, lora_rank=4,
          learning_rate=2e-4, save_total_limit=None)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tiny_llm_dir, tmp_path_factory):
    """One finished 4-step LoRA run (checkpoints at steps 2 and 4), copied fresh into each test."""
    import ragtune as rt

    root = tmp_path_factory.mktemp("trained")
    train = write_json(root / "t.json", span_items(8, seed=2))
    rt.finetune.lora.run(str(tiny_llm_dir), str(train), str(root / "out"), **KW)
    return root


@pytest.fixture
def run(trained, tmp_path):
    import shutil

    shutil.copytree(trained, tmp_path / "r")
    return tmp_path / "r"


def adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def cli(tiny_llm_dir, r: Path, *extra: str) -> list[str]:
    return ["finetune", "llm", "--base", str(tiny_llm_dir), "--train", str(r / "t.json"), "--output",
            str(r / "out"), "--max-steps", "4", "--save-steps", "2", "--per-device-train-batch-size", "2",
            "--dtype", "fp32", "--no-merge", "--lora-rank", "4", "--learning-rate", "2e-4", *extra]


# -- 1. changed data or settings ---------------------------------------------------------------------------
def test_resume_true_refuses_changed_settings_and_data_naming_them(tiny_llm_dir, run, capsys):
    from ragtune.cli import main

    before = adapter(run / "out")
    assert main(cli(tiny_llm_dir, run, "--resume", "--learning-rate", "5e-3")) == 1
    err = capsys.readouterr().err
    assert "cannot resume from" in err and "learning_rate: 0.0002 -> 0.005" in err and "overwrite" in err
    write_json(run / "t.json", span_items(10, seed=9))
    assert main(cli(tiny_llm_dir, run, "--resume")) == 1
    err = capsys.readouterr().err
    assert "the training data changed" in err and "step-4" in err
    assert same(adapter(run / "out"), before)            # nothing was overwritten


def test_resume_auto_starts_over_when_data_or_settings_changed_and_says_why(tiny_llm_dir, run):
    import ragtune as rt

    before = adapter(run / "out")
    write_json(run / "t.json", span_items(10, seed=9))
    res = rt.finetune.lora.run(str(tiny_llm_dir), str(run / "t.json"), str(run / "out"),
                               **{**KW, "learning_rate": 5e-3}, resume="auto")
    assert res.metrics["steps"] == 4 and res.metrics["history"][0]["step"] == 1   # trained from scratch
    assert not same(adapter(run / "out"), before)
    log = (run / "out" / "train.log").read_text()
    assert "not resuming" in log and "the training data changed" in log and "learning_rate: 0.0002 -> 0.005" in log
    saved = (run / "out" / "config.yaml").read_text()
    assert "learning_rate: 0.005" in saved


def test_unchanged_rerun_with_resume_auto_trains_nothing_more(tiny_llm_dir, run):
    import ragtune as rt

    before = adapter(run / "out")
    res = rt.finetune.lora.run(str(tiny_llm_dir), str(run / "t.json"), str(run / "out"), **KW, resume="auto")
    assert res.metrics["steps"] == 4 and same(adapter(run / "out"), before)


# -- 2. damaged checkpoints -------------------------------------------------------------------------------
def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def half_written(step: Path) -> None:
    (step / "manifest.json").unlink()        # killed before the manifest (written last)


def replaced_by_pickle(step: Path) -> None:
    (step / "trainable.safetensors").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))


DAMAGE = {
    "flipped-weights": lambda s: flip_bytes(s / "trainable.safetensors"),
    "flipped-optimizer": lambda s: flip_bytes(s / "optimizer.safetensors"),
    "truncated-weights": lambda s: truncate(s / "trainable.safetensors"),
    "truncated-state": lambda s: truncate(s / "state.json"),
    "missing-rng": lambda s: (s / "rng.safetensors").unlink(),
    "half-written": half_written,
    "garbage-manifest": lambda s: (s / "manifest.json").write_text("{not json"),
    "pickle-instead-of-safetensors": replaced_by_pickle,
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tiny_llm_dir, run, damage):
    """Resuming from step 2 after the step-4 checkpoint was damaged reproduces the uninterrupted
    run bit for bit, and the log names the skipped checkpoint and why."""
    import ragtune as rt

    reference = adapter(run / "out")
    DAMAGE[damage](run / "out" / "checkpoints" / "step-4")
    res = rt.finetune.lora.run(str(tiny_llm_dir), str(run / "t.json"), str(run / "out"), **KW, resume=True)
    log = (run / "out" / "train.log").read_text()
    assert "skipping damaged checkpoint" in log and "step-4" in log
    assert "resumed from" in log and "step-2 (step 2)" in log
    assert res.metrics["steps"] == 4
    after = adapter(run / "out")
    assert all(torch.isfinite(t).all() for t in after.values())
    assert same(after, reference)


def test_all_checkpoints_damaged(tiny_llm_dir, run, capsys):
    from ragtune.cli import main

    for step in ("step-2", "step-4"):
        flip_bytes(run / "out" / "checkpoints" / step / "trainable.safetensors")
    assert main(cli(tiny_llm_dir, run, "--resume", "true")) == 1
    err = capsys.readouterr().err
    assert "no valid checkpoint" in err and "all damaged" in err and "--overwrite-output-dir" in err
    assert "Traceback" not in err
    assert main(cli(tiny_llm_dir, run, "--resume", "auto")) == 0      # auto: starts over, says so
    assert "starting over" in (run / "out" / "train.log").read_text()


def test_nan_weights_in_a_checksummed_checkpoint_are_refused(tiny_llm_dir, run, capsys):
    from safetensors.torch import load_file, save_file

    from ragtune.cli import main
    from ragtune.core.io import atomic_write_json, sha256_file

    step = run / "out" / "checkpoints" / "step-4"
    weights = load_file(str(step / "trainable.safetensors"))
    first = sorted(weights)[0]
    weights[first] = torch.full_like(weights[first], float("nan"))
    save_file(weights, str(step / "trainable.safetensors"))
    manifest = json.loads((step / "manifest.json").read_text())
    manifest["sha256"]["trainable.safetensors"] = sha256_file(step / "trainable.safetensors")
    atomic_write_json(step / "manifest.json", manifest)
    assert main(cli(tiny_llm_dir, run, "--resume", "true")) == 1
    err = capsys.readouterr().err
    assert "NaN/inf weights" in err and str(step) in err and "Traceback" not in err


def test_a_non_finite_loss_stops_the_run_with_a_clear_error(tiny_llm_dir, tmp_path, capsys):
    """A base model with a NaN weight: the loss is NaN at the first step; the run stops there, says
    so, and writes no adapter (nothing that looks like a result)."""
    from safetensors.torch import load_file, save_file

    from ragtune.cli import main

    bad = tmp_path / "nan-model"
    import shutil

    shutil.copytree(tiny_llm_dir, bad)
    weights = load_file(str(bad / "model.safetensors"))
    norm = next(k for k in weights if k.endswith("input_layernorm.weight"))
    weights[norm][0] = float("nan")
    save_file(weights, str(bad / "model.safetensors"), metadata={"format": "pt"})
    train = write_json(tmp_path / "t.json", span_items(8, seed=2))
    code = main(["finetune", "llm", "--base", str(bad), "--train", str(train), "--output", str(tmp_path / "o"),
                 "--max-steps", "3", "--dtype", "fp32", "--no-merge"])
    err = capsys.readouterr().err
    assert code == 1 and "loss became nan at step 1, before any update" in err and "base model" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o" / "adapter").exists() and not (tmp_path / "o" / "metrics.json").exists()


# -- 3. planted pickles ---------------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_pickles_in_a_run_dir_never_run(tiny_llm_dir, run):
    """Seen before: a planted optimizer.pt ran a shell command on --resume. Every pickle name the HF
    ecosystem uses is planted in both checkpoints and the adapter dir; resuming (which loads the
    step-4 checkpoint) and serving the output dir run none of them."""
    import ragtune as rt
    from ragtune.engine.builtin import BuiltinEngine

    marker = run / "PWNED"
    payload = pickle.dumps(_Payload(str(marker)))
    for step in ("step-2", "step-4"):
        d = run / "out" / "checkpoints" / step
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "trainer_state.pt"):
            (d / name).write_bytes(payload)
    res = rt.finetune.lora.run(str(tiny_llm_dir), str(run / "t.json"), str(run / "out"), **KW, resume=True)
    assert "resumed from" in (run / "out" / "train.log").read_text() and res.metrics["steps"] == 4
    assert not marker.exists()
    for name in ("adapter_model.bin", "pytorch_model.bin", "training_args.bin"):
        (run / "out" / "adapter" / name).write_bytes(payload)
    BuiltinEngine.load(str(run / "out"), dtype="fp32", device="cpu").close()
    assert not marker.exists()


def test_no_pickle_loader_in_the_package():
    """The class, not the example: no torch.load / pickle.load anywhere in ragtune's source."""
    import re

    src = Path(__file__).resolve().parents[2] / "src" / "ragtune"
    offenders = [f"{p.relative_to(src)}:{i}" for p in src.rglob("*.py")
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if re.search(r"\btorch\.load\(|\bpickle\.loads?\(|\bjoblib\.load\(|weights_only\s*=\s*False", line)]
    assert offenders == []


# -- SIGTERM (what Slurm and Kubernetes send) -------------------------------------------------------------
def test_sigterm_saves_a_valid_checkpoint_and_resume_continues(tiny_llm_dir, tmp_path):
    train = write_json(tmp_path / "t.json", span_items(16, seed=4))
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "ragtune.cli", "finetune", "llm", "--base", str(tiny_llm_dir), "--train",
           str(train), "--output", str(out), "--max-steps", "40", "--per-device-train-batch-size", "1",
           "--dtype", "fp32", "--no-merge", "--save-steps", "1000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    progress = out / "progress.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and not (progress.exists() and len(progress.read_text().splitlines()) >= 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "terminated (SIGTERM)" in err
    from ragtune.finetune.llm import checkpoint

    found = checkpoint.newest_valid(out)
    assert found is not None, "no valid checkpoint after SIGTERM"
    step = found[1]["step"]
    assert 3 <= step < 40
    assert not (out / "adapter").exists()
    done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"(step {step})" in (out / "train.log").read_text()      # continued, not restarted
    assert json.loads(done.stdout)["steps"] == 40
