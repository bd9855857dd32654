"""Run a fine-tune under the chosen launcher: in this process, or as a ``torchrun`` / Slurm job that
re-validates the same config from a YAML file (the job spec travels, not pickled state)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..core.errors import ConfigError
from ..core.io import atomic_write_text
from ..launch import LauncherConfig, launch_command


def launch_finetune(method: Any, cfg: Any, launcher: dict[str, Any] | LauncherConfig, workdir: Path) -> Any:
    """Fine-tune with ``cfg`` (its method is ``method``) under ``launcher``; returns the result when
    run locally (the launched job writes the same output directory), a :class:`DryRun` for a Slurm
    dry run."""
    lc = launcher if isinstance(launcher, LauncherConfig) else LauncherConfig.build(**launcher)
    if lc.type == "local":
        return cfg.execute()
    if not method.launchable:
        raise ConfigError(f"method '{method.name}' cannot run under launcher '{lc.type}'",
                          hint="use launcher type local (flagembedding starts its own torchrun: nproc_per_node)")
    cfg.require_paths()
    workdir = Path(workdir)
    cfg_path = workdir / "finetune.yaml"
    # Only the keys that were set: the job re-validates them exactly as the caller's config did.
    values = {"method": cfg.method, **cfg.model_dump(mode="json", exclude_unset=True)}
    atomic_write_text(cfg_path, yaml.safe_dump(values, sort_keys=False, allow_unicode=True))
    # None when the launched job ran (it wrote the output directory), a DryRun for a Slurm dry run
    return launch_command(["finetune", "llm", "--config", str(cfg_path.resolve())], lc, workdir)
