"""Fenced code blocks of README.md and docs/*.md, and a check of ``ragtune ...`` command lines
against the real click CLI without running them (used by tests/test_docs_snippets.py)."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")


@dataclass(frozen=True)
class Block:
    file: str        # relative to the repository root: README.md, docs/finetune.md
    index: int       # position among the file's fenced blocks (0-based)
    repeat: int      # earlier blocks of the file with the same first line (ids stay unique)
    line: int        # 1-based line of the opening fence
    lang: str        # the info string ("" when the fence has none)
    text: str

    @property
    def id(self) -> str:
        """``file:first line`` (``#k`` added for the k-th repeat of a first line): it does not move
        when a block is added above, so the exemption table keeps naming the same blocks."""
        return f"{self.file}:{first_line(self.text)}" + (f"#{self.repeat}" if self.repeat else "")


def first_line(text: str) -> str:
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return re.sub(r"\s+", " ", first)[:40].rstrip()


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def extract_blocks(path: Path, root: Path = ROOT) -> list[Block]:
    """Every fenced block of a markdown file (a fence closes on the same fence string)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = path.relative_to(root).as_posix()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        if j == len(lines):
            raise ValueError(f"{rel}:{i + 1}: unclosed code fence")
        body = "\n".join(ln[len(indent):] if ln.startswith(indent) else ln for ln in lines[i + 1:j])
        repeat = sum(first_line(b.text) == first_line(body) for b in blocks)
        blocks.append(Block(rel, len(blocks), repeat, i + 1, lang.lower(), body + "\n"))
        i = j + 1
    return blocks


def all_blocks(root: Path = ROOT) -> list[Block]:
    return [b for f in doc_files(root) for b in extract_blocks(f, root)]


# -- shell blocks --------------------------------------------------------------------------------
def logical_lines(text: str) -> list[str]:
    """Lines of a shell block with ``\\`` continuations joined and ``# comments`` dropped."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = pending + raw
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        line = strip_comment(line).strip()
        if line:
            out.append(line)
    if pending.strip():
        out.append(strip_comment(pending).strip())
    return out


def strip_comment(line: str) -> str:
    """Drop a shell comment: a ``#`` at the start of a word, outside quotes."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def split_commands(line: str) -> list[list[str]]:
    """One logical line -> its simple commands (split at ``&&``, ``||``, ``;``, `` | ``, ``&``),
    each as argv with leading ``VAR=value`` assignments removed."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set(";&|"):
            commands.append([])
        else:
            commands[-1].append(token)
    result = []
    for argv in commands:
        while argv and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", argv[0]):
            argv = argv[1:]
        if argv:
            result.append(argv)
    return result


def command_lines(text: str) -> list[list[str]]:
    """Every simple command of a shell block as argv; a usage synopsis line gives one argv per
    variant (see :func:`synopsis_variants`)."""
    out: list[list[str]] = []
    for line in logical_lines(text):
        if is_synopsis(line):
            out.extend(synopsis_variants(shlex.split(line)))
        else:
            out.extend(split_commands(line))
    return out


def synopsis_variants(argv: list[str]) -> list[list[str]]:
    """A usage synopsis (``[--opt V]``, ``a|b|c``, ``[more dirs...]``, a trailing ``...``) ->
    concrete command lines: every optional part is given (brackets dropped) except one holding
    ``...``, a word ``...`` is dropped, and a value ``a|b|c`` is tried alternative by alternative."""
    words: list[str] = []
    group: list[str] | None = None
    for w in argv:
        if group is None and w.startswith("["):
            group = []
        if group is not None:
            group.append(w)
            if w.endswith("]"):
                if not any("..." in g for g in group):
                    words.extend(g.strip("[]") for g in group)
                group = None
        elif "..." not in w:
            words.append(w)
    alts = [w.split("|") if "|" in w and not w.startswith(("http", "-")) else [w] for w in words]
    base = [a[0] for a in alts]
    lines = [base]
    for i, choices in enumerate(alts):
        for alt in choices[1:]:
            lines.append([*base[:i], alt, *base[i + 1:]])
    return lines


def is_synopsis(line: str) -> bool:
    return bool(re.search(r"\s\[-|\w\|\w|\.\.\.", line))


MISSING_PATH = re.compile(r"""^(?:File|Directory|Path) (['"])(.+)\1 does not exist\.$""")


def check_ragtune_argv(args: list[str], *, max_placeholders: int = 12) -> list[str]:
    """Parse ``ragtune ARGS`` with the real CLI (every group and command's ``make_context``, as
    click's own invoke does, but no callback runs). Unknown options, missing required ones, bad
    choices and bad types raise click's UsageError. A ``click.Path(exists=True)`` value that does not
    exist is the one failure tolerated: an empty placeholder (file or directory, as the parameter
    accepts) is created under the current directory (a temp dir) and the parse repeated. Returns the placeholders created."""
    from ragtune.cli import cli

    created: list[str] = []
    for _ in range(max_placeholders + 1):
        try:
            _parse(cli, args)
            return created
        except click.BadParameter as exc:
            made = _placeholder_for(exc, Path.cwd())
            if made is None:
                raise
            created.append(made)
    raise AssertionError(f"more than {max_placeholders} missing paths in: ragtune {shlex.join(args)}")


def _parse(cli: click.Group, args: list[str]) -> None:
    ctx = cli.make_context("ragtune", list(args), resilient_parsing=False)   # hoists -v/-q itself
    cmd: click.Command = cli
    while isinstance(cmd, click.Group):
        rest = [*getattr(ctx, "_protected_args", ()), *ctx.args]
        if not rest:
            if cmd.invoke_without_command:
                return
            raise click.UsageError("Missing command.", ctx=ctx)
        name, sub, rest = cmd.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        if "not available in this build" in (sub.help or ""):
            raise click.UsageError(f"`ragtune ... {name}` is not implemented", ctx=ctx)
        ctx = sub.make_context(name, rest, parent=ctx, resilient_parsing=False)
        cmd = sub
    check_numbers(ctx)


def check_numbers(ctx: click.Context) -> None:
    """Options that ragtune's config flags pass on as text for pydantic (``--batch-size``) say
    INTEGER / FLOAT in --help: their values must be numbers of that kind."""
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        kind = getattr(param, "metavar", None)
        if value is None or kind not in ("INTEGER", "FLOAT"):
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            try:
                number = float(v)
            except (TypeError, ValueError):
                raise click.BadParameter(f"{v!r} is not a number", ctx=ctx, param=param) from None
            if kind == "INTEGER" and not number.is_integer():
                raise click.BadParameter(f"{v!r} is not an integer", ctx=ctx, param=param)


def _placeholder_for(exc: click.BadParameter, cwd: Path) -> str | None:
    param = exc.param
    if param is None or not isinstance(param.type, click.Path) or not param.type.exists:
        return None
    m = MISSING_PATH.match(exc.message)
    if not m:
        return None
    name = m.group(2)
    target = Path(name)
    if target.is_absolute() or ".." in target.parts:
        return None                  # only relative placeholders inside the temp dir
    target = cwd / target
    if target.exists():
        return None
    as_dir = param.type.dir_okay and (not param.type.file_okay or not target.suffix)
    if as_dir:
        target.mkdir(parents=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    return name
