"""`ragtune sweep SWEEP.yaml`: a grid of runs through the stage cache, ranked, with a report."""
from __future__ import annotations

import click


@click.command("sweep")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--list", "list_only", is_flag=True, help="Print the runs of the grid and exit (validates them all).")
def sweep(config: str, list_only: bool) -> None:
    """Run every combination of a grid of `ragtune run` settings and rank them (finished stages skip)."""
    from ..workflow.sweep import SweepConfig

    cfg = SweepConfig.from_yaml(config)
    if list_only:
        for name, run in cfg.points():
            click.echo(f"{name}  ->  {run.run_dir}")
        return
    report = cfg.execute()
    click.echo((__import__("pathlib").Path(cfg.output) / "sweep.md").read_text(encoding="utf-8"))
    click.echo(f"best: {report['runs'][0]['name']}" if report["runs"] else "no runs")
