"""`ragtune infer`: batch inference over an eval set, resumable."""
from __future__ import annotations

import click

from ..core.config import config_options
from ..engine.base import engine_settings_classes
from ..infer.runner import InferConfig


@click.command("infer")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML file with these settings.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@config_options(InferConfig, extra=engine_settings_classes())
def infer(config_path: str | None, quiet: bool, **values) -> None:
    """Predict every item of --evalset with --model (local) or --url (server) into --output.

    \b
    ragtune infer --model out/run1 --evalset eval.json --output preds.json
    ragtune infer --url http://127.0.0.1:8000/v1 --evalset eval.json --output preds.json --concurrency 8
    An interrupted run resumes from OUTPUT.partial.jsonl when rerun with the same settings.
    """
    from ..core.prompt import unescape_cli
    from ..infer.runner import run_infer

    if values.get("template") is not None:   # as `ragtune data convert --template`: \n typed in a shell
        values["template"] = unescape_cli(values["template"])
    cfg = InferConfig.from_sources(config_path, **values)
    rows = run_infer(cfg, show_progress=not quiet)
    click.echo(f"{len(rows)} predictions written to {cfg.output}")
