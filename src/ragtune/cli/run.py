"""`ragtune run CONFIG.yaml [--force STAGE ...]`."""
from __future__ import annotations

import click


@click.command("run")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--force", "force", multiple=True, help="Re-run this stage even if up to date (repeatable).")
@click.option("--run-dir", default=None, help="Override run_dir from the config.")
@click.option("--list-stages", is_flag=True, help="Print the stages of this config and exit.")
def run(config: str, force: tuple[str, ...], run_dir: str | None, list_stages: bool) -> None:
    """Run the whole chain from one YAML: prepare data, fine-tune, infer and evaluate base, tuned and
    remote baselines, and write a comparison report. Finished stages are skipped on re-runs."""
    from ..workflow.run import RunConfig, build_stages, run_config

    cfg = RunConfig.from_yaml(config, run_dir=run_dir)
    if list_stages:
        for stage in build_stages(cfg):
            click.echo(stage.name)
        return
    runner = run_config(cfg, force=force)
    for r in runner.results:
        click.echo(f"{r.name:<18} {r.status:<8} {r.seconds:8.1f}s  {r.dir}")
    report = runner.run_dir / "report" / "report.md"
    if not report.exists():                       # a documents run: the 2x2 of eval_rag
        report = runner.run_dir / "eval_rag" / "report" / "report.md"
    if report.exists():
        click.echo("\n" + report.read_text(encoding="utf-8").split("\n## Items where")[0].strip())
        click.echo(f"\nreport: {report}  (HTML: {report.with_suffix('.html')})")
