"""The ``ragtune`` command.

Each command group lives in its own module (``ragtune.cli.<group>``) and is imported only when that
group runs, and those modules import torch/transformers only inside their commands, so
``ragtune --help`` stays fast. Library errors (:class:`ragtune.core.errors.RagtuneError`) become short
messages and exit code 1 here, and only here.
"""
from __future__ import annotations

import importlib
import sys

import click

from ..core.errors import RagtuneError, Terminated, sigterm_as_interrupt

# group name -> (module, attribute, one-line help shown by `ragtune --help` without importing it)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "models": ("ragtune.cli.models", "models", "List, pull and verify models (bundled, local, hub)."),
    "data": ("ragtune.cli.data", "data", "Validate and convert data; build eval sets and embedding sets."),
    "finetune": ("ragtune.cli.finetune", "finetune", "Fine-tune an LLM (lora|freeze|full) or an embedder."),
    "serve": ("ragtune.cli.serve", "serve", "Serve a model behind an OpenAI-compatible HTTP API."),
    "chat": ("ragtune.cli.chat", "chat", "Chat with a model in the terminal (streamed; --compare base: base vs tuned)."),
    "infer": ("ragtune.cli.infer", "infer", "Batch inference over an eval set (local model or URL)."),
    "export": ("ragtune.cli.export", "export", "Export a fine-tune to GGUF (llama.cpp, Ollama Modelfile)."),
    "eval": ("ragtune.cli.eval", "eval_group", "Score predictions; compare runs side by side."),
    "run": ("ragtune.cli.run", "run", "Run the whole chain from one YAML config."),
    "sweep": ("ragtune.cli.sweep", "sweep", "Run a grid of run configs through the stage cache; rank them."),
    "demo": ("ragtune.cli.demo", "demo", "Offline end-to-end demo on the bundled models."),
    "ui": ("ragtune.cli.ui", "ui", "Local web app: runs (start/stop/resume, live curves), data, compare, retrieval, chat."),
}


class LazyGroup(click.Group):
    """click group whose subcommands are imported on first use (click docs' lazy-loading pattern)."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return super().get_command(ctx, name)   # commands added with add_command (plugins)
        module_name, attr, _ = COMMANDS[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return _not_ready(name)
        return getattr(module, attr)

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, hoist_global_flags(self, ctx, list(args)))

    def format_commands(self, ctx, formatter):
        rows = [(name, help_) for name, (_, _, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


GLOBAL_FLAGS = ("-v", "--verbose", "-q", "--quiet")


def hoist_global_flags(group: click.Group, ctx: click.Context, args: list[str]) -> list[str]:
    """``ragtune data validate F -v`` means ``ragtune -v data validate F``: the group's -v/-q given
    after the subcommand are moved in front of it. A flag the subcommand defines itself (``ragtune
    infer --quiet``: no progress bar) stays the subcommand's; nothing after ``--`` moves."""
    cmd: click.Command | None = group
    own: set[str] = set()
    hoisted: list[str] = []
    rest: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in GLOBAL_FLAGS and cmd is not group and arg not in own:
            hoisted.append(arg)
            continue
        if not arg.startswith("-") and isinstance(cmd, click.Group):
            sub = cmd.get_command(ctx, arg)
            if sub is not None:
                cmd = sub
                own |= {o for p in sub.params for o in (*p.opts, *p.secondary_opts)}
        rest.append(arg)
    return hoisted + rest


def _not_ready(name: str) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                   help=COMMANDS[name][2] + " (not available in this build yet)")
    def cmd(**_):
        raise click.ClickException(f"`ragtune {name}` is not implemented in this version of ragtune yet.")

    return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logs.")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only (progress is shown by default).")
@click.version_option(package_name="ragtune")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """ragtune: fine-tune the LLM and the embedding model of your RAG system on your own domain."""
    from ..core.log import setup_logging

    verbosity = 0 if quiet else (2 if verbose else 1)
    setup_logging(verbosity)
    if verbosity < 2:
        quiet_third_party(ctx.invoked_subcommand)
    ctx.obj = {"verbosity": verbosity}


NOISY_LIBRARIES = r"(transformers|huggingface_hub|accelerate|peft|sentence_transformers|datasets|torch)(\.|$)"


def quiet_third_party(command: str | None = None) -> None:
    """At CLI start only (never when the library is imported): third-party FutureWarnings and
    transformers / huggingface_hub info-and-warning chatter are hidden, so what the console shows
    at WARNING is ragtune's own. Settings the user made in the environment win; ``-v`` shows it all.
    Environment variables, not imports: ``ragtune --help`` stays free of torch and transformers."""
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if command != "models":   # transformers' per-load "Loading weights" / "Writing model shards" bars
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")   # (downloads in `models pull` keep theirs)
    warnings.filterwarnings("ignore", category=FutureWarning, module=NOISY_LIBRARIES)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=NOISY_LIBRARIES)


def main(argv: list[str] | None = None) -> int:
    try:
        with sigterm_as_interrupt():   # `kill` cleans up like Ctrl-C: no temp file or half output left
            rc = cli.main(args=argv, prog_name="ragtune", standalone_mode=False)
    except click.exceptions.Abort as exc:   # click turns Ctrl-C (and our SIGTERM) into Abort
        if isinstance(exc.__cause__, Terminated):
            click.echo("terminated", err=True)
            return 143   # 128 + SIGTERM, what a shell reports for a process killed by it
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except RagtuneError as exc:
        click.echo(click.style("error: ", fg="red", bold=True) + exc.message, err=True)
        if exc.hint:
            click.echo("  hint: " + exc.hint, err=True)
        return 1
    except Terminated:
        click.echo("terminated", err=True)
        return 143   # 128 + SIGTERM, what a shell reports for a process killed by it
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return rc if isinstance(rc, int) else 0   # ctx.exit(n) in standalone_mode=False returns n


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
