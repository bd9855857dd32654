"""`ragtune finetune embed --base M --train F --output DIR`: fine-tune an embedding model."""
from __future__ import annotations

import click

from ..core.config import config_options
from ..finetune.embed.config import EmbedFinetuneConfig

_SHORT = ("base", "train", "output")


@click.command("embed")
@click.option("--base", "base", help="Base embedder: bundled name, local dir or HF id [default: all-MiniLM-L6-v2].")
@click.option("--train", "train", help="Training file: {query, pos:[..], neg:[..], prompt?} per line.")
@click.option("--output", "output", help="Output dir (the tuned model + metrics.json/.md/.png).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML file with any of the keys below.")
@config_options(EmbedFinetuneConfig, exclude=_SHORT)
def embed(config_path, **values) -> None:
    """Fine-tune an embedder with in-batch + hard negatives; evaluates base and tuned on held-out data."""
    import json

    from ..finetune.embed import finetune_embedding

    cfg = EmbedFinetuneConfig.from_sources(config_path, **values)
    result = finetune_embedding(cfg)
    m = result.metrics
    click.echo(json.dumps({"output": str(result.output), "train_seconds": m["train_seconds"],
                           "base": m["base"], "tuned": m["tuned"]}, indent=2))
    if m["base"] and m["tuned"]:
        for k in cfg.eval_ks:
            click.echo(f"recall@{k}: {m['base'][f'recall@{k}']:.4f} -> {m['tuned'][f'recall@{k}']:.4f}", err=True)
