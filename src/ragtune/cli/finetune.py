"""`ragtune finetune llm ...` and `ragtune finetune embed ...`: the method registry's CLI.

The choices of ``--method`` and the flags come from the registered methods: every LLM method's
config fields become flags, and the config of the chosen method validates them (a flag of another
method is an error that names the method and its keys).
"""
from __future__ import annotations

import click

from ..core.config import config_options
from ..finetune import METHODS, FinetuneConfig
from ..finetune.llm.config import LLMFinetuneConfig


def _method_configs(kind: str) -> tuple[type[FinetuneConfig], ...]:
    return tuple(dict.fromkeys(m.config_cls for _, m in METHODS.items() if m.kind == kind))


def _method_names(kind: str) -> list[str]:
    return [n for n, m in METHODS.items() if m.kind == kind]


_PATHS = ("base", "train", "output", "method")


@click.group("finetune")
def finetune() -> None:
    """Fine-tune an LLM or an embedding model (methods: see --method of each command)."""


@finetune.command("llm")
@click.option("--base", "base", help="Base model: bundled name, local dir or HF id.")
@click.option("--train", "train", help="Training data (JSON/JSONL/CSV/Parquet, alpaca or OpenAI messages).")
@click.option("--output", "output", help="Output directory.")
@click.option("--method", "method", type=click.Choice(_method_names("llm")), help="Fine-tuning method [default: lora].")
@click.option("--nproc-per-node", type=int, default=None,
              help="Launch under torchrun with N processes (DDP; FSDP with --fsdp for full).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML file with any of the keys below.")
@config_options(LLMFinetuneConfig, exclude=_PATHS, extra=_method_configs("llm"))
def llm(config_path, nproc_per_node, **values) -> None:
    """Fine-tune an LLM; writes adapter/, merged/, metrics.json, loss.png, config.yaml to --output."""
    import os
    from pathlib import Path

    from ..core.config import deep_merge, load_yaml_mapping, nest
    from ..finetune import finetune_config
    from ..workflow.jobs import FinetuneJob

    data = deep_merge(load_yaml_mapping(config_path) if config_path else {}, nest(values))
    cfg = finetune_config(data, config_path)
    if METHODS.get(cfg.method).kind != "llm":
        raise click.UsageError(f"method '{cfg.method}' fine-tunes embedders: use `ragtune finetune embed`")
    launcher = {"type": "local"}
    if nproc_per_node and nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
        launcher = {"type": "torchrun", "nproc_per_node": nproc_per_node}
    result = FinetuneJob(config=cfg, launcher=launcher).execute()
    _print_result(result, Path(str(cfg.output)))


@finetune.command("embed")
@click.option("--base", "base", help="Base embedder: bundled name, local dir or HF id [default: all-MiniLM-L6-v2].")
@click.option("--train", "train", help="Training file: {query, pos:[..], neg:[..], prompt?} per line.")
@click.option("--output", "output", help="Output dir (the tuned model + metrics.json/.md/.png).")
@click.option("--method", "method", type=click.Choice(_method_names("embedding")),
              help="Fine-tuning method [default: embedding].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML file with any of the keys below.")
@config_options(_method_configs("embedding")[0], exclude=_PATHS, extra=_method_configs("embedding")[1:])
def embed(config_path, **values) -> None:
    """Fine-tune an embedder with in-batch + hard negatives; evaluates base and tuned on held-out data."""
    from ..core.config import deep_merge, load_yaml_mapping, nest
    from ..finetune import finetune_config

    data = deep_merge(load_yaml_mapping(config_path) if config_path else {}, nest(values))
    cfg = finetune_config(data, config_path, default_method="embedding")
    if METHODS.get(cfg.method).kind != "embedding":
        raise click.UsageError(f"method '{cfg.method}' fine-tunes LLMs: use `ragtune finetune llm`")
    result = cfg.execute()
    m = result.metrics
    _print_result(result, result.output)
    if m.get("base") and m.get("tuned"):
        for k in cfg.eval_ks:  # type: ignore[attr-defined]
            click.echo(f"recall@{k}: {m['base'][f'recall@{k}']:.4f} -> {m['tuned'][f'recall@{k}']:.4f}", err=True)


def _print_result(result, output) -> None:
    import json
    from pathlib import Path

    from ..launch import DryRun

    if isinstance(result, DryRun):   # a Slurm dry run: the script was printed; nothing ran
        return
    if result is None:   # launched elsewhere (torchrun / slurm): the job wrote the output dir
        metrics = json.loads((Path(output) / "metrics.json").read_text(encoding="utf-8"))
    else:
        metrics = result.metrics
    summary = {k: v for k, v in metrics.items() if k not in ("history", "loss_history")}
    click.echo(json.dumps({"output": str(output), **summary}, indent=2, default=str))
