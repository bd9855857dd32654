"""`ragtune chat`: an interactive conversation with a model (or two: base vs tuned), streamed."""
from __future__ import annotations

import sys

import click

from ..core.config import config_options
from ..engine.base import engine_settings_classes
from ..engine.chat import ChatConfig


@click.command("chat")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML file with these settings.")
@config_options(ChatConfig, extra=engine_settings_classes())
@click.pass_context
def chat(ctx: click.Context, config_path: str | None, **values) -> None:
    """Talk to --model (or a server at --url): each line is a user turn, the answer streams back.

    \b
    ragtune chat --model gemma-3-270m
    ragtune chat --model out/run1 --compare base     # the fine-tune and its base model, turn by turn
    ragtune chat --url http://127.0.0.1:8000          # a running `ragtune serve` (or any OpenAI-compatible API)
    printf 'hello\\n/quit\\n' | ragtune chat --model out/run1 --max-tokens 32
    Commands: /reset (forget the conversation), /system [TEXT], /help, /quit (or Ctrl-D).
    Ctrl-C stops an answer (piped: ends the chat); at the prompt it ends the chat.
    Piped input: only the answers go to stdout (with --compare, each after its [label]).
    """
    from ..engine.chat import open_chat

    cfg = ChatConfig.from_sources(config_path, **values)
    interactive = sys.stdin.isatty()
    with open_chat(cfg) as conversation:
        failed = _loop(conversation, interactive)
    if failed:
        ctx.exit(1)


def _say(text: str, *, err: bool = False, fg: str | None = None) -> None:
    click.echo(click.style(text, fg=fg) if fg else text, err=err)


def _read(interactive: bool) -> str | None:
    """The next input line, None at EOF."""
    if not interactive:
        line = sys.stdin.readline()
        return line if line else None
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:  # pragma: no cover - Windows
        pass
    if sys.stdout.isatty():
        return input("> ")
    click.echo("> ", nl=False, err=True)   # stdout is a file: the prompt goes to the terminal only
    return input()


def _loop(conversation, interactive: bool) -> bool:
    """Read and answer lines until /quit, EOF or Ctrl-C; True when a turn failed."""
    from ..core.errors import RagtuneError, Terminated
    from ..engine.chat import COMMANDS, parse_line

    failed = False
    if interactive:
        names = " vs ".join(s.label for s in conversation.sessions)
        _say(f"chatting with {names}; /help for commands, Ctrl-D to end", err=True, fg="cyan")

    open_line = [False]   # an answer (or its label) is on stdout without its newline yet

    def end_line() -> None:
        if open_line[0]:
            click.echo()
            open_line[0] = False

    def on_start(session) -> None:
        if conversation.comparing:
            click.echo(click.style(f"[{session.label}]", fg="cyan", bold=True) + " ", nl=False)
            open_line[0] = True

    def on_delta(piece: str) -> None:
        click.echo(piece, nl=False)
        sys.stdout.flush()
        open_line[0] = True

    def on_end(reply) -> None:
        open_line[0] = True   # an empty answer still gets its line
        end_line()
        if reply.finish_reason == "length" and interactive:
            _say("(cut at --max-tokens)", err=True, fg="yellow")

    while True:
        try:
            line = _read(interactive)
        except EOFError:
            line = None
        except KeyboardInterrupt as exc:
            if isinstance(exc, Terminated):
                raise
            line = None
        if line is None:
            if interactive:
                click.echo(err=True)
            return failed
        try:
            action, arg = parse_line(line)
        except RagtuneError as exc:
            _say(f"{exc.message}" + (f" ({exc.hint})" if exc.hint else ""), err=True, fg="yellow")
            continue
        if action == "empty":
            continue
        if action == "quit":
            return failed
        if action == "help":
            for command, what in COMMANDS.items():
                _say(f"  {command:<16} {what}", err=True)
            continue
        if action == "reset":
            conversation.reset()
            _say("(conversation cleared)", err=True, fg="cyan")
            continue
        if action == "system":
            if arg is None:
                for session in conversation.sessions:
                    current = session.effective_system()
                    prefix = f"[{session.label}] " if conversation.comparing else ""
                    _say(f"{prefix}system: {current!r}" if current is not None else f"{prefix}system: (none)",
                         err=True)
            else:
                conversation.set_system(arg)
                _say("(system prompt set)", err=True, fg="cyan")
            continue
        try:
            conversation.turn(arg, on_delta=on_delta, on_start=on_start, on_end=on_end)
        except KeyboardInterrupt as exc:
            if isinstance(exc, Terminated):
                raise
            end_line()
            _say("(answer stopped)", err=True, fg="yellow")
            if not interactive:
                return failed
        except RagtuneError as exc:
            end_line()
            failed = True
            hint = exc.hint or ("/reset starts a shorter conversation" if "context limit" in exc.message else None)
            _say("error: " + exc.message + (f"\n  hint: {hint}" if hint else ""), err=True, fg="red")
