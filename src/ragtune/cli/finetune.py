"""`ragtune finetune llm ...` (and `ragtune finetune embed`, added by ragtune.cli.finetune_embed)."""
from __future__ import annotations

import click

from ..core.config import config_options
from ..finetune.llm.config import LLMFinetuneConfig

# --base/--train/--output are the short names the docs use; the long config names work in YAML.
_PATH_FIELDS = ("base_model", "train", "output_dir", "method")


@click.group("finetune")
def finetune() -> None:
    """Fine-tune an LLM (lora | freeze | full | llamafactory) or an embedding model."""


@finetune.command("llm")
@click.option("--base", "base_model", help="Base model: bundled name, local dir or HF id.")
@click.option("--train", "train", help="Training data (JSON/JSONL, alpaca or OpenAI messages).")
@click.option("--output", "output_dir", help="Output directory.")
@click.option("--method", "method", type=click.Choice(["lora", "freeze", "full", "llamafactory"]),
              help="Fine-tuning method [default: lora].")
@click.option("--nproc-per-node", type=int, default=None,
              help="Launch under torchrun with N processes (DDP; FSDP with --fsdp for full).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML file with any of the keys below.")
@config_options(LLMFinetuneConfig, exclude=_PATH_FIELDS)
def llm(config_path, nproc_per_node, **values) -> None:
    """Fine-tune an LLM; writes adapter/, merged/, metrics.json, loss.png, config.yaml to --output."""
    import json
    import os
    from pathlib import Path

    from ..finetune import get_method

    method = values.get("method")
    if method == "llamafactory":
        from ..finetune.llamafactory import LlamaFactoryConfig, train

        values.pop("method")
        cfg = LlamaFactoryConfig.from_sources(config_path, **values)
        result = train(cfg)
    else:
        cfg = LLMFinetuneConfig.from_sources(config_path, **values)
        method = get_method(cfg.method)
        if nproc_per_node and nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
            from ..workflow.launching import launch_finetune

            cfg.require_paths()
            workdir = Path(str(cfg.output_dir).rstrip("/") + ".launch")
            launch_finetune(method, cfg, {"type": "torchrun", "nproc_per_node": nproc_per_node}, workdir)
            click.echo(Path(cfg.output_dir, "metrics.json").read_text())
            return
        result = method.run_config(cfg)
    summary = {k: v for k, v in result.metrics.items() if k != "history"}
    click.echo(json.dumps({"output_dir": str(result.output_dir), **summary}, indent=2, default=str))


try:
    from .finetune_embed import embed

    finetune.add_command(embed)
except ModuleNotFoundError:
    pass
