"""The run form: YAML text <-> config mapping, validated by the same ``RunConfig`` the CLI uses, so
what the form accepts ``ragtune run`` accepts, and the form shows the very ConfigError message
(key path, closest valid key, valid keys) next to the field it names."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, RagtuneError
from .procs import RUN_YAML, cli_line

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# key paths quoted in ConfigError messages ('llm.finetune.lora_rnak') or leading them (data.train: ...)
_QUOTED = re.compile(r"'([A-Za-z_][\w]*(?:\.[\w\[\]]+)*)'")
_IN_SECTION = re.compile(r"'(\w+)' in ([A-Za-z_]\w*(?:\.[\w\[\]]+)*)")
_DID_YOU_MEAN = re.compile(r"did you mean '(\w+)'")
_LEADING = re.compile(r"^([A-Za-z_]\w*(?:\.[\w\[\]]+)*):")
# registry look-ups name the thing, not the key: which key holds it
_REGISTRY_KEYS = {"fine-tune method": "llm.method", "metric": "eval.metrics", "engine": "llm.deploy"}
_SECTIONS = ("run_dir", "seed", "data", "llm", "eval", "baselines", "launcher")


def template(root: Path, name: str = "my-run") -> dict[str, Any]:
    """A starting point: the bundled models, a LoRA fine-tune, the local launcher."""
    return {"run_dir": str(root / name), "seed": 0,
            "data": {"train": "", "eval": ""},
            "llm": {"base": "gemma-3-270m", "method": "lora",
                    "finetune": {"learning_rate": 2.0e-4, "num_train_epochs": 1, "per_device_train_batch_size": 4,
                                 "cutoff_len": 1024, "save_steps": 10},
                    "prompt": {}, "deploy": "builtin", "infer": {"max_tokens": 32}},
            "eval": {"metrics": ["exact", "cosine", "origin"], "embed": "all-MiniLM-L6-v2"},
            "launcher": {"type": "local"}}


def parse_yaml(text: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"the YAML must be a mapping of keys to values, got {type(data).__name__}")
    return data


def dump_yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def error_keys(message: str) -> list[str]:
    """Key paths a ConfigError message names: the form marks those fields."""
    keys = []
    lead = _LEADING.match(message)
    if lead and lead.group(1).split(".")[0] in _SECTIONS:
        keys.append(lead.group(1))
    section = _IN_SECTION.search(message)
    if section and section.group(2).split(".")[0] in _SECTIONS:
        keys.append(f"{section.group(2)}.{section.group(1)}")
        mean = _DID_YOU_MEAN.search(message)
        if mean:
            keys.append(f"{section.group(2)}.{mean.group(1)}")
    quoted = [m.group(1) for m in _QUOTED.finditer(message) if m.group(1).split(".")[0] in _SECTIONS]
    keys += quoted
    mean = _DID_YOU_MEAN.search(message)
    if mean and quoted and "." in quoted[0]:       # unknown key 'llm.deploi' ... did you mean 'deploy'
        keys.append(quoted[0].rsplit(".", 1)[0] + "." + mean.group(1))
    for phrase, key in _REGISTRY_KEYS.items():
        if f"unknown {phrase} " in message:
            keys.append(key)
    seen: list[str] = []
    for k in keys:
        if k not in seen:
            seen.append(k)
    return seen


def run_dir_of(root: Path, data: dict[str, Any]) -> Path:
    """The run directory, which must be a plain name under the runs root (so the Runs page shows it)."""
    value = data.get("run_dir")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("run_dir: missing; give the run a name (the run directory is RUNS/<name>)")
    path = Path(value).expanduser()
    path = (path if path.is_absolute() else Path.cwd() / path).resolve()
    if path.parent != root or not _NAME.match(path.name):
        raise ConfigError(f"run_dir: {value} must be a directory directly inside the runs directory {root} "
                          "(letters, digits, . _ -), so this UI lists it")
    return path


def check(root: Path, *, yaml_text: str | None = None, config: dict[str, Any] | None = None,
          preflight: bool = True) -> dict[str, Any]:
    """Validate a run config given as YAML text or as a mapping. Returns both forms, the stages
    it makes, the CLI line, and ``error`` / ``error_keys`` when it is not valid."""
    from ..workflow.run import RunConfig, build_stages

    out: dict[str, Any] = {"ok": False, "error": None, "error_keys": [], "stages": [], "warnings": []}
    try:
        data = parse_yaml(yaml_text) if yaml_text is not None else dict(config or {})
        out["config"] = data
        out["yaml"] = yaml_text if yaml_text is not None else dump_yaml(data)
        run_dir = run_dir_of(root, data)
        out["name"] = run_dir.name
        yaml_path = run_dir / RUN_YAML
        out["yaml_path"] = str(yaml_path)
        out["cli"] = cli_line(yaml_path, Path.cwd())
        cfg = RunConfig.build("the run form", **{**data, "run_dir": str(run_dir)})
        out["stages"] = [s.name for s in build_stages(cfg)]
        if preflight:
            cfg.preflight()
        if (run_dir / "config.yaml").is_file() or (run_dir / RUN_YAML).is_file():
            out["warnings"].append(f"{run_dir.name} exists: starting it continues that run (finished stages "
                                   "whose settings are unchanged are skipped)")
        if cfg.launcher.type == "slurm" and not cfg.launcher.dry_run:
            out["warnings"].append("launcher slurm: the fine-tune is submitted with sbatch; Stop here ends the "
                                   "local `ragtune run` process only (cancel the job with scancel)")
        out["ok"] = True
    except RagtuneError as exc:
        out["error"] = exc.message + (f"\nhint: {exc.hint}" if exc.hint else "")
        out["error_keys"] = error_keys(exc.message)
    return out
