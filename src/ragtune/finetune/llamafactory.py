"""LLaMA-Factory backend (``rt.finetune.llamafactory``, optional: ``pip install llamafactory``).

From the same hyper-parameters as the builtin trainer it writes ``dataset_info.json`` (alpaca or
sharegpt/OpenAI-messages columns, detected from the data) and the ``train``/``export`` YAML files into
``OUTPUT/llamafactory/``, runs ``llamafactory-cli train`` then ``export``, streams their output to the
console and ``OUTPUT/train.log``, and raises with the log tail on any non-zero exit. Unlike
LazyLLM's wrapper it never pipes through ``tee`` (which hides the exit code), never truncates to a
default ``max_samples`` and never drops an unknown key silently.
"""
from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..core.errors import BackendError, ConfigError
from ..core.log import get_logger
from .base import METHODS, FinetuneMethod, FinetuneResult
from .llm.config import LoraSettings, _split_commas

log = get_logger(__name__)
DATASET_NAME = "ragtune_train"
_LORA_KEYS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target")
_FREEZE_KEYS = ("freeze_trainable_layers", "freeze_trainable_modules")


class LlamaFactoryConfig(LoraSettings):
    method: Literal["llamafactory"] = "llamafactory"
    finetuning_type: Literal["lora", "freeze", "full"] = Field("lora", description="LLaMA-Factory finetuning_type.")
    freeze_trainable_layers: int = Field(2, ge=1, description="freeze: train the top N decoder layers.")
    freeze_trainable_modules: str | list[str] = Field(
        "all", description="freeze: inside those layers, 'all' or module names (mlp, self_attn).")
    lf_template: str = Field("default", description="LLaMA-Factory chat template name (qwen, llama3, default...).")
    llamafactory_cli: str = Field("llamafactory-cli", description="The llamafactory-cli executable.")
    extra_args: dict[str, Any] = Field(default_factory=dict,
                                       description="More LLaMA-Factory train keys, passed through as given.")

    @field_validator("freeze_trainable_modules", mode="before")
    @classmethod
    def _modules_list(cls, value):
        return _split_commas(value)

    @model_validator(mode="after")
    def _type_keys(self):
        foreign = {"lora": _FREEZE_KEYS, "freeze": _LORA_KEYS, "full": _LORA_KEYS + _FREEZE_KEYS}[self.finetuning_type]
        # a foreign key at its default is fine (a dumped config round-trips); a changed one is a mistake
        bad = [k for k in foreign if k in self.model_fields_set and getattr(self, k) != type(self).model_fields[k].default]
        if bad:
            raise ValueError(f"{', '.join(bad)} do(es) not apply to finetuning_type '{self.finetuning_type}'")
        return self


# -- generated files ------------------------------------------------------------------------------------
def detect_format(train_path: str) -> str:
    """'alpaca' or 'sharegpt' (OpenAI messages); validates every record on the way (the one validator)."""
    from ..data.validate import load_conversations

    load_conversations(train_path)
    from ..data.readers import read_rows

    kinds = {"sharegpt" if "messages" in r.data else "alpaca" for r in read_rows(train_path)}
    if len(kinds) > 1:
        raise ConfigError(f"{train_path} mixes alpaca records and 'messages' records; LLaMA-Factory needs one format")
    return kinds.pop()


def dataset_info(train_path: str, fmt: str) -> dict:
    entry: dict[str, Any] = {"file_name": str(Path(train_path).resolve()), "formatting": fmt}
    if fmt == "alpaca":
        entry["columns"] = {"prompt": "instruction", "query": "input", "response": "output",
                            "system": "system", "history": "history"}
    else:
        entry["columns"] = {"messages": "messages"}
        entry["tags"] = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                         "assistant_tag": "assistant", "system_tag": "system"}
    return {DATASET_NAME: entry}


def _target(value) -> str:
    return value if isinstance(value, str) else ",".join(value)


def train_args(cfg: LlamaFactoryConfig, model_dir: str, dataset_dir: Path, bf16: bool) -> dict:
    out = Path(str(cfg.output)).resolve()
    args: dict[str, Any] = {
        "model_name_or_path": model_dir, "stage": "sft", "do_train": True, "finetuning_type": cfg.finetuning_type,
        "dataset": DATASET_NAME, "dataset_dir": str(dataset_dir), "template": cfg.lf_template,
        "cutoff_len": cfg.cutoff_len, "overwrite_cache": True, "preprocessing_num_workers": 1,
        "output_dir": str(out / ("adapter" if cfg.finetuning_type == "lora" else "merged")),
        "overwrite_output_dir": True, "logging_steps": cfg.logging_steps, "plot_loss": True,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps, "learning_rate": cfg.learning_rate,
        "num_train_epochs": cfg.num_train_epochs, "lr_scheduler_type": cfg.lr_scheduler_type,
        "warmup_ratio": cfg.warmup_ratio, "weight_decay": cfg.weight_decay, "max_grad_norm": cfg.max_grad_norm,
        "seed": cfg.seed, "bf16": bf16, "report_to": "none", "save_only_model": False,
    }
    if cfg.max_samples is not None:  # LLaMA-Factory truncates to this; only when the user asked
        args["max_samples"] = cfg.max_samples
    if cfg.max_steps:
        args["max_steps"] = cfg.max_steps
    if cfg.save_steps:
        args["save_steps"] = cfg.save_steps
    if cfg.val_size:
        if "val_split" in cfg.model_fields_set and cfg.val_split == "prompt_group":
            raise ConfigError("val_split: prompt_group is the builtin trainer's; LLaMA-Factory holds out single "
                              "records", hint="set val_split: record, or use method lora/freeze/full")
        log.info("LLaMA-Factory holds out val_size=%s as single records (val_split=record)", cfg.val_size)
        args.update(val_size=cfg.val_size, eval_strategy="steps",
                    eval_steps=cfg.eval_steps or cfg.save_steps or 100,
                    per_device_eval_batch_size=cfg.per_device_eval_batch_size)
    if cfg.prompt.system is not None:
        args["default_system"] = cfg.prompt.system
    if cfg.finetuning_type == "lora":
        args.update(lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                    lora_target=_target(cfg.lora_target))
    elif cfg.finetuning_type == "freeze":
        args.update(freeze_trainable_layers=cfg.freeze_trainable_layers,
                    freeze_trainable_modules=_target(cfg.freeze_trainable_modules))
    if cfg.gradient_checkpointing is False:
        args["disable_gradient_checkpointing"] = True
    if cfg.resume:
        args["overwrite_output_dir"] = False  # HF Trainer resumes from the last checkpoint in output_dir
    clash = set(cfg.extra_args) & set(args)
    if clash:
        raise ConfigError(f"extra_args {sorted(clash)} are set by ragtune from its own keys; set those instead")
    return {**args, **cfg.extra_args}


def export_args(cfg: LlamaFactoryConfig, model_dir: str) -> dict:
    out = Path(str(cfg.output)).resolve()
    return {"model_name_or_path": model_dir, "adapter_name_or_path": str(out / "adapter"),
            "template": cfg.lf_template, "finetuning_type": "lora", "export_dir": str(out / "merged"),
            "export_size": 5, "export_legacy_format": False}


def write_job_files(cfg: LlamaFactoryConfig, model_dir: str, bf16: bool) -> dict[str, Path]:
    import yaml

    from ..core.io import atomic_write_json, atomic_write_text

    job = Path(str(cfg.output)) / "llamafactory"
    assert cfg.train is not None   # require_paths() checked it
    fmt = detect_format(cfg.train)
    files = {"dataset_info": atomic_write_json(job / "dataset_info.json", dataset_info(cfg.train, fmt)),
             "train": atomic_write_text(job / "train.yaml", yaml.safe_dump(
                 train_args(cfg, model_dir, job.resolve(), bf16), sort_keys=False, allow_unicode=True))}
    if cfg.finetuning_type == "lora" and cfg.merge:
        files["export"] = atomic_write_text(job / "export.yaml", yaml.safe_dump(
            export_args(cfg, model_dir), sort_keys=False, allow_unicode=True))
    return files


# -- running ----------------------------------------------------------------------------------------------
def stream(cmd: list[str], log_path: Path, what: str, tail_lines: int = 40) -> None:
    """Run ``cmd``; each output line goes to stderr and ``log_path``; non-zero exit -> BackendError
    with the last lines (an exit code is never lost in a pipe)."""
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    with open(log_path, "a", encoding="utf-8") as fh:
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace", bufsize=1)
        except FileNotFoundError:
            raise BackendError(f"{cmd[0]} not found", hint="pip install llamafactory") from None
        try:
            for line in proc.stdout:  # type: ignore[union-attr]
                tail.append(line.rstrip("\n"))
                sys.stderr.write(line)
                fh.write(line)
                fh.flush()
            code = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
    if code != 0:
        raise BackendError(f"{what} failed with exit code {code} (log: {log_path}). Last lines:\n"
                           + "\n".join(tail))


def train(cfg: LlamaFactoryConfig) -> FinetuneResult:
    from ..core.io import atomic_write_json
    from ..models import resolve_model
    from ..models.device import resolve_dtype
    from ..models.source import FINETUNE_MANIFEST

    cfg.require_paths()
    out = Path(str(cfg.output))
    if out.exists() and any(p.name != "llamafactory" for p in out.iterdir()) and not (cfg.resume or cfg.overwrite_output_dir):
        raise ConfigError(f"output dir {out} is not empty", hint="pass resume=True or overwrite_output_dir=True")
    cli = shutil.which(cfg.llamafactory_cli) or (cfg.llamafactory_cli if os.path.isfile(cfg.llamafactory_cli) else None)
    if cli is None:
        raise BackendError(f"'{cfg.llamafactory_cli}' is not installed", hint="pip install llamafactory")
    model_dir = str(resolve_model(str(cfg.base), "llm").path)
    import torch

    bf16 = resolve_dtype(cfg.dtype) == torch.bfloat16
    files = write_job_files(cfg, model_dir, bf16)
    cfg.save(out / "config.yaml")
    log_path = out / "train.log"
    stream([cli, "train", str(files["train"])], log_path, "llamafactory-cli train")
    if "export" in files:
        stream([cli, "export", str(files["export"])], log_path, "llamafactory-cli export")
    lora = cfg.finetuning_type == "lora"
    metrics = collect_metrics(out / ("adapter" if lora else "merged"))
    atomic_write_json(out / "metrics.json", metrics)
    if metrics.get("history"):
        from .llm.plots import plot_loss

        plot_loss(metrics["history"], out / "loss.png")
    adapter = out / "adapter" if lora else None
    merged = out / "merged" if (out / "merged").exists() else None
    atomic_write_json(out / FINETUNE_MANIFEST, {
        "base_model": cfg.base, "base_model_path": model_dir, "method": "llamafactory",
        "finetuning_type": cfg.finetuning_type, "backend": "llamafactory",
        "adapter": "adapter" if adapter else None, "merged": "merged" if merged else None,
        "prompt": cfg.prompt.model_dump(mode="json"), "lf_template": cfg.lf_template,
        "cutoff_len": cfg.cutoff_len})
    return FinetuneResult(out, metrics, adapter, merged)


class LlamaFactoryMethod(FinetuneMethod):
    name = "llamafactory"
    kind = "llm"
    config_cls = LlamaFactoryConfig
    description = "LLaMA-Factory's trainer (optional extra) from the same hyper-parameters"

    def train(self, cfg: Any) -> FinetuneResult:
        return train(cfg)


llamafactory = METHODS.register("llamafactory", LlamaFactoryMethod())


def collect_metrics(run_dir: Path) -> dict:
    """LLaMA-Factory/HF Trainer's trainer_state.json log history, in ragtune's metrics shape."""
    state_file = run_dir / "trainer_state.json"
    if not state_file.exists():
        return {"backend": "llamafactory", "history": []}
    state = json.loads(state_file.read_text())
    history = [{"step": h["step"], **({"loss": h["loss"]} if "loss" in h else {}),
                **({"eval_loss": h["eval_loss"]} if "eval_loss" in h else {})}
               for h in state.get("log_history", []) if "loss" in h or "eval_loss" in h]
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    return {"backend": "llamafactory", "steps": state.get("global_step"),
            "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
            "eval_loss": evals[-1] if evals else None, "history": history}
