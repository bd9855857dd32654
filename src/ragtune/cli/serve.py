"""`ragtune serve`: an OpenAI-compatible server for an LLM or an embedding model."""
from __future__ import annotations

import click

from ..core.config import config_options
from ..engine.base import engine_settings_classes
from ..serve.server import ServeConfig


@click.command("serve")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML file with these settings.")
@config_options(ServeConfig, extra=engine_settings_classes())
def serve(config_path: str | None, **values) -> None:
    """Serve --model behind /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models, /health.

    \b
    ragtune serve --model gemma-3-270m
    ragtune serve --model out/run1                 # a fine-tune output: merged/ or base + adapter/
    ragtune serve --model gemma-3-270m --adapter out/run1/adapter --api-key secret
    ragtune serve --model all-MiniLM-L6-v2         # embeddings
    ragtune serve --model BASE --adapter DIR --engine vllm   # GPU
    """
    from ..serve.server import serve as run

    run(ServeConfig.from_sources(config_path, **values))
