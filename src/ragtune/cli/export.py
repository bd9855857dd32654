"""`ragtune export`: a fine-tune or model -> GGUF (llama.cpp, Ollama), optionally with a Modelfile."""
from __future__ import annotations

import click

from ..core.config import config_options
from ..export.job import ExportConfig


@click.command("export")
@click.argument("model", required=False)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML file with these settings.")
@config_options(ExportConfig, exclude=("model",))
def export(model: str | None, config_path: str | None, **values) -> None:
    """Export MODEL (a fine-tune output DIR, DIR/merged, a model dir or a bundled name) to GGUF.

    \b
    ragtune export out/run1 --output out/run1-gguf                       # merged, q8_0
    ragtune export out/run1 --output out/run1-gguf --quant q4_k_m --ollama
    ragtune export out/run1 --output out/run1-lora --lora --quant f16    # base GGUF + GGUF LoRA adapter
    ragtune serve --engine llamacpp --model out/run1-gguf                # serve the export
    ollama create run1 -f out/run1-gguf/Modelfile                        # or hand it to Ollama
    """
    if model is not None:
        values["model"] = model
    cfg = ExportConfig.from_sources(config_path, **values)
    result = cfg.execute()
    click.echo(f"exported {cfg.model} -> {result.output} ({result.model_file.name}"
               + (f" + {result.adapter_file.name}" if result.adapter_file else "")
               + (", Modelfile" if cfg.ollama else "") + ")")
