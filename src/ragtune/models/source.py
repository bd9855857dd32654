"""Work out what to serve from what the user points at (no torch here).

Accepted forms:
- ``--model M`` (bundled name, local dir, hub id) with an optional ``--adapter DIR`` (PEFT adapter);
- ``--model DIR/merged`` (full weights + tokenizer written by ``ragtune finetune``);
- ``--model DIR`` where DIR is a fine-tune output (has ``ragtune_finetune.json``): its ``merged/``
  is used when present, else base model + ``adapter/``; the prompt it trained with
  (``ragtune_prompt.json``, :func:`ragtune.core.prompt.read_recorded_prompt`) becomes the default;
- ``--model ADAPTER_DIR`` (a bare PEFT adapter: ``adapter_config.json`` names the base model).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, ModelNotFoundError
from ..core.prompt import PromptConfig, RecordedPrompt, read_recorded_prompt

FINETUNE_MANIFEST = "ragtune_finetune.json"
_BASE_KEYS = ("base_model", "base", "model")  # tolerant: the manifest's key for the base model ref


@dataclass(frozen=True)
class ServingSource:
    model: str                      # what resolve_model() receives (name, dir, hub id)
    adapter: Path | None = None     # PEFT adapter dir to apply on top of ``model``
    name: str = "model"             # the name clients use in the "model" field
    prompt: dict[str, Any] = field(default_factory=dict)  # prompt defaults from a fine-tune manifest
    recorded: RecordedPrompt | None = None  # ragtune_prompt.json of the fine-tune output

    def prompt_config(self) -> PromptConfig:
        """The prompt the fine-tune trained with (the serving default), or the plain defaults."""
        return self.recorded.prompt if self.recorded is not None else PromptConfig.coerce(self.prompt)

    def trained_prompt(self) -> RecordedPrompt | PromptConfig | None:
        """What :func:`ragtune.core.prompt.resolve_prompt` takes: the recorded prompt, an older
        output's manifest prompt, or None (not a fine-tune output)."""
        if self.recorded is not None:
            return self.recorded
        return PromptConfig.coerce(self.prompt) if self.prompt else None


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _manifest_prompt(data: dict[str, Any]) -> dict[str, Any]:
    prompt = data.get("prompt")
    src = prompt if isinstance(prompt, dict) else data
    return {k: src[k] for k in ("system", "drop_builtin_system", "template") if src.get(k) is not None}


def _base_from_manifest(path: Path, data: dict[str, Any]) -> str:
    local = data.get("base_model_path")  # the resolved dir training used, when still on this machine
    if isinstance(local, str) and Path(local).is_dir():
        return local
    for key in _BASE_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
    raise ConfigError(f"{path} does not name the base model (expected one of the keys "
                      f"{', '.join(_BASE_KEYS)})", hint="pass it explicitly: --model BASE --adapter DIR/adapter")


def _adapter_dir(path: Path) -> Path:
    """An adapter given as a fine-tune output dir means its ``adapter/`` subfolder."""
    if (path / "adapter_config.json").exists():
        return path
    if (path / "adapter" / "adapter_config.json").exists():
        return path / "adapter"
    raise ModelNotFoundError(f"adapter {path} has no adapter_config.json (nor adapter/adapter_config.json)",
                             hint="point --adapter at the PEFT adapter folder written by fine-tuning")


def _adapter_base(adapter: Path) -> str:
    data = _read_manifest(adapter / "adapter_config.json")
    base = data.get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{adapter / 'adapter_config.json'} does not name its base model",
                          hint="pass --model BASE together with --adapter")
    return str(base)


def resolve_source(model: str | os.PathLike, adapter: str | os.PathLike | None = None,
                   name: str | None = None) -> ServingSource:
    ref = os.fspath(model)
    path = Path(ref).expanduser()
    prompt: dict[str, Any] = {}
    adapter_path = _adapter_dir(Path(adapter).expanduser()) if adapter else None
    if (path / FINETUNE_MANIFEST).exists() and path.is_dir():
        data = _read_manifest(path / FINETUNE_MANIFEST)
        prompt = _manifest_prompt(data)
        if adapter_path is None and (path / "merged" / "config.json").exists():
            ref = str(path / "merged")
        elif adapter_path is None and (path / "adapter" / "adapter_config.json").exists():
            ref, adapter_path = _base_from_manifest(path / FINETUNE_MANIFEST, data), path / "adapter"
        elif adapter_path is None:
            raise ModelNotFoundError(f"fine-tune output {path} has neither merged/ nor adapter/ inside",
                                     hint="the fine-tune run may not have finished")
        else:
            ref = _base_from_manifest(path / FINETUNE_MANIFEST, data)
    elif path.is_dir() and (path / "adapter_config.json").exists() and not (path / "config.json").exists():
        if adapter_path is not None:
            raise ConfigError(f"--model {path} is itself a PEFT adapter; pass the base model as --model")
        adapter_path, ref = path, _adapter_base(path)
    if path.name == "merged" and (path.parent / FINETUNE_MANIFEST).exists():
        prompt = _manifest_prompt(_read_manifest(path.parent / FINETUNE_MANIFEST))
    recorded = read_recorded_prompt(path) or (read_recorded_prompt(adapter) if adapter else None)
    if recorded is not None:
        prompt = recorded.prompt.model_dump(mode="json")
    served = name or _default_name(path if path.exists() else None, ref, adapter_path)
    return ServingSource(ref, adapter_path, served, prompt, recorded)


def _default_name(path: Path | None, ref: str, adapter: Path | None) -> str:
    if path is not None:
        return path.parent.name if path.name in ("merged", "adapter") else path.name
    if adapter is not None:
        return adapter.parent.name if adapter.name == "adapter" else adapter.name
    return ref.rstrip("/").split("/")[-1]


def finetune_base(model: str | os.PathLike) -> str | None:
    """The base model that the fine-tune at ``model`` was trained from (a fine-tune output dir, its
    ``merged/`` or ``adapter/``, or a bare PEFT adapter); None when ``model`` is not a fine-tune
    (a bundled name, a plain model dir, a hub id). What ``ragtune chat --compare base`` talks to."""
    path = Path(os.fspath(model)).expanduser()
    if path.name in ("merged", "adapter") and (path.parent / FINETUNE_MANIFEST).is_file():
        path = path.parent
    if (path / FINETUNE_MANIFEST).is_file():
        return _base_from_manifest(path / FINETUNE_MANIFEST, _read_manifest(path / FINETUNE_MANIFEST))
    if path.is_dir() and (path / "adapter_config.json").is_file() and not (path / "config.json").exists():
        return _adapter_base(path)
    return None
