"""`ragtune models list | pull NAME | verify NAME`."""
from __future__ import annotations

import click


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


@click.group("models")
def models() -> None:
    """List, pull and verify models."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(as_json: bool) -> None:
    """Show known models: name, kind, source, size and whether they are ready to load."""
    from ..models import list_models

    rows = list_models()
    if as_json:
        import dataclasses
        import json

        click.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return
    header = ("NAME", "KIND", "SOURCE", "SIZE", "STATUS")
    table = [(r.name, r.kind, r.source, _human(r.size_bytes),
              "ready" if r.ready else ("not materialised" + (f" ({r.note})" if r.note else "")))
             for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
    for row in (header, *table):
        click.echo("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


@models.command("pull")
@click.argument("name")
@click.option("--force", is_flag=True, help="Rebuild even if a verified copy exists.")
def pull_cmd(name: str, force: bool) -> None:
    """Materialise NAME: convert a bundled model, or download a Hugging Face id."""
    from ..models import pull_model

    resolved = pull_model(name, force=force)
    click.echo(f"{resolved.name} ({resolved.kind}, {resolved.source}) ready at {resolved.path}")


@models.command("verify")
@click.argument("name")
def verify_cmd(name: str) -> None:
    """Check a converted bundled model file by file (sizes and sha256)."""
    from ..models import find_bundled
    from ..models.registry import bundled_cache_dir, verify_materialised

    model = find_bundled(name)
    if model is None or not model.needs_conversion:
        raise click.ClickException(f"'{name}' is not a converted bundled model; nothing to verify")
    verify_materialised(bundled_cache_dir(model.name), deep=True)
    click.echo(f"{model.name}: OK")
