"""`ragtune ui [--runs DIR] [--port P] [--host H] [--api-key K]`."""
from __future__ import annotations

import os

import click

API_KEY_ENV = "RAGTUNE_UI_API_KEY"


@click.command("ui")
@click.option("--runs", "runs_dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="The runs directory: every run, fine-tune and eval under it is shown; new runs go there.")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(0, 65535), help="TCP port (0 = any free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; anything but 127.0.0.1 exposes the UI (and starting runs) to the network.")
@click.option("--api-key", default=None, help=f"Require this key on every page and endpoint (or set ${API_KEY_ENV}).")
def ui(runs_dir: str, port: int, host: str, api_key: str | None) -> None:
    """A local web app over your run directories: runs (start/stop/resume, live loss and dev-metric
    curves, logs), data validation, eval comparison, retrieval and chat (base vs tuned)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(f"ragtune ui needs the [ui] extra ({exc.name} is missing): "
                                   "pip install 'ragtune[ui]'") from None
    from ..serve.server import ServerThread
    from ..ui import create_app

    key = api_key or os.environ.get(API_KEY_ENV) or None
    if host not in ("127.0.0.1", "localhost", "::1") and not key:
        click.echo(click.style("warning: ", fg="yellow") + f"serving on {host} without --api-key: anyone who "
                   "can reach this port can start processes on this machine", err=True)
    app = create_app(runs_dir, api_key=key, host=host)
    srv = ServerThread(app, host=host, port=port).start()
    shown = f"{srv.url}/" + ("?key=<your key>" if key else "")
    click.echo(f"ragtune ui: {shown}  (runs: {app.state.root}; Ctrl-C to stop; runs it started keep running)")
    try:
        srv.wait()
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
