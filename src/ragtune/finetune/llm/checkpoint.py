"""Checkpoints of the builtin trainer: safe to load, checked, and tied to the run that wrote them.

- No pickle: weights, optimizer tensors and the RNG state are safetensors; everything else is JSON.
  A planted ``optimizer.pt`` in a run directory is never loaded (``torch.load`` would run its code).
- Checksums: ``manifest.json`` (written last) holds the sha256 of every file. A flipped byte, a
  truncated file or a half-written checkpoint fails the check; resume then falls back to the
  newest valid checkpoint and says so.
- Identity: ``state.json`` records a fingerprint of the training data and of every setting that
  changes the numbers (learning rate, method keys, cutoff, seed ...). Resuming with other data or
  settings is refused with the keys that differ (``resume=True``), or starts over and says why
  (``resume="auto"``, what ``ragtune run`` uses).
"""
from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path
from typing import Any

from ...core.errors import ConfigError, RagtuneError
from ...core.io import atomic_dir, atomic_write_json, sha256_file
from ...core.log import get_logger

log = get_logger(__name__)
MANIFEST = "manifest.json"
FORMAT = 2
# Settings that do not change what is trained (when to log, save, evaluate; where to write). The
# training file's path is not one either: the data is identified by its sha256, so a run dir or a
# data set moved or copied elsewhere resumes.
NOT_TRAINING = {"train", "resume", "overwrite_output_dir", "logging_steps", "save_steps", "save_minutes",
                "save_total_limit", "merge", "tokenize_cache", "output", "eval_steps", "eval_minutes",
                "per_device_eval_batch_size", "dev_metrics", "dev_file", "dev_samples", "dev_max_tokens",
                "dev_batch_size", "dev_extractive", "keep_best", "early_stopping_patience", "time_budget"}


class CheckpointError(RagtuneError):
    """A checkpoint that cannot be used: damaged, or written by another run's data or settings."""


def run_identity(cfg: Any) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the data's sha256 and the training settings."""
    settings = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in NOT_TRAINING}
    return {"data_sha256": sha256_file(cfg.train), "settings": settings}


def identity_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    diffs = []
    if saved.get("data_sha256") != current["data_sha256"]:
        diffs.append("the training data changed")
    old, new = saved.get("settings", {}), current["settings"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            diffs.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return diffs


def checkpoints(out: Path) -> list[Path]:
    """Checkpoint dirs, newest first."""
    found = [p for p in (out / "checkpoints").glob("step-*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]), reverse=True)


# -- saving -------------------------------------------------------------------------------------------------
def _flatten_optimizer(sd: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    tensors, scalars = {}, {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, Any], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save(path: Path, weights: dict[str, Any], optimizer: Any, scheduler: Any, state: dict[str, Any]) -> Path:
    """Write one checkpoint atomically: a killed save leaves no directory that looks finished."""
    import torch
    from safetensors.torch import save_file

    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    with atomic_dir(path) as tmp:
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / "trainable.safetensors"))
        save_file(opt_tensors or {"_empty": torch.zeros(1)}, str(tmp / "optimizer.safetensors"))
        save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        py_state = random.getstate()
        atomic_write_json(tmp / "extra.json", {
            "format": FORMAT, "optimizer": opt_meta, "scheduler": scheduler.state_dict(),
            "python_rng": [py_state[0], list(py_state[1]), py_state[2]]})
        atomic_write_json(tmp / "state.json", state, indent=1)
        files = sorted(p.name for p in tmp.iterdir() if p.is_file())
        atomic_write_json(tmp / MANIFEST, {"format": FORMAT, "sha256": {f: sha256_file(tmp / f) for f in files}})
    return path


def prune(out: Path, keep: int | None) -> None:
    if keep:
        for old in checkpoints(out)[keep:]:
            shutil.rmtree(old, ignore_errors=True)


# -- loading ------------------------------------------------------------------------------------------------
def verify(path: Path) -> dict[str, Any]:
    """The checkpoint's state.json, after every file matched its checksum (else CheckpointError)."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{path} has no {MANIFEST} (written by an older ragtune, or half-written)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        expected = manifest["sha256"]
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{manifest_path} is not a valid manifest") from None
    for name, digest in expected.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{f} is missing")
        if sha256_file(f) != digest:
            raise CheckpointError(f"{f} does not match its checksum (damaged or truncated)")
    try:
        return json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path / 'state.json'} is unreadable: {exc}") from None


def newest_valid(out: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that passes :func:`verify`; damaged newer ones are reported, not used."""
    for path in checkpoints(out):
        try:
            return path, verify(path)
        except CheckpointError as exc:
            log.warning("skipping damaged checkpoint: %s", exc)
    return None


def load(path: Path, model: Any, optimizer: Any, scheduler: Any) -> None:
    """Restore weights, optimizer, scheduler and RNG from a verified checkpoint."""
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise CheckpointError(f"checkpoint {path} does not match this model/method (e.g. {missing[0]})")
    bad = [n for n, t in weights.items() if not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"checkpoint {path} holds NaN/inf weights (e.g. {bad[0]})")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].dtype))
    extra = json.loads((path / "extra.json").read_text(encoding="utf-8"))
    opt_tensors = {k: v for k, v in load_file(str(path / "optimizer.safetensors")).items() if k != "_empty"}
    optimizer.load_state_dict(_unflatten_optimizer(opt_tensors, extra["optimizer"]))
    scheduler.load_state_dict(extra["scheduler"])
    torch.set_rng_state(load_file(str(path / "rng.safetensors"))["torch"])
    version, internal, gauss = extra["python_rng"]
    random.setstate((version, tuple(internal), gauss))


def check_finite(loss: float, step: int, out: Path) -> None:
    if math.isfinite(loss):
        return
    if step == 1:   # nothing was trained yet: the base weights or the inputs are the cause
        raise RagtuneError(f"the training loss became {loss} at step 1, before any update: the base model's "
                           "weights (or its dtype) produce non-finite values",
                           hint="check the base model (a damaged or fp16-overflowing checkpoint?); try dtype fp32")
    last = checkpoints(out)
    raise RagtuneError(f"the training loss became {loss} at step {step}: the run diverged and was stopped",
                       hint="lower learning_rate (or use bf16/fp32 instead of fp16)"
                            + (f"; the last checkpoint before it is {last[0]}" if last else ""))


def resume_point(out: Path, cfg: Any, identity: dict[str, Any]) -> tuple[Path, dict[str, Any]] | None:
    """Where to continue from, per ``cfg.resume`` (True / "auto" / False); None = start fresh.
    ``resume=True`` refuses other data or settings; ``"auto"`` starts over instead, saying why."""
    if not cfg.resume:
        return None
    found = newest_valid(out)
    if found is None:
        if checkpoints(out):
            msg = f"no valid checkpoint in {out / 'checkpoints'} (all damaged)"
            if cfg.resume == "auto":
                log.warning("%s: starting over", msg)
                return None
            raise CheckpointError(msg, hint="start over with overwrite_output_dir=True (--overwrite-output-dir)")
        if cfg.resume is True:
            log.warning("resume requested but %s has no checkpoint: starting from scratch", out)
        return None
    path, state = found
    diffs = identity_diff(state.get("identity", {}), identity)
    if diffs:
        if cfg.resume == "auto":
            log.info("not resuming %s: %s; training starts over", path, "; ".join(diffs))
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
            return None
        raise ConfigError(f"cannot resume from {path}: {'; '.join(diffs)}",
                          hint="resume with the settings and data it was trained with, or start over with "
                               "overwrite_output_dir=True (--overwrite-output-dir) or another output dir")
    if path != checkpoints(out)[0]:
        log.info("resuming from %s, the newest valid checkpoint (the damaged newer ones are warned above)", path)
    return path, state

