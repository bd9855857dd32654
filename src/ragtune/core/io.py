"""Atomic writers: a crash or Ctrl-C never leaves a half-written file or directory behind.

Everything ragtune writes goes through here (temp file in the same directory + ``os.replace``), so a
reader sees the old content or the new one, never a mix.

Temp names carry the writer's host and pid (``.NAME.HOST-PID.XXXX.tmp``, ``.NAME.tmp-HOST-PID.XXXX``).
An exception or Ctrl-C removes the temp at once (and the CLI turns SIGTERM into one); a writer
killed outright (SIGKILL, OOM killer, power loss) cannot, so the next write of the same path
removes the temps of writers on this host that are no longer running. Temps of live processes,
and of other hosts sharing the directory (NFS), are left alone.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40] or "host"
_TEMP_OWNER = re.compile(r"(?:tmp-|old-)?(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.")


def _owner() -> str:
    return f"{_HOST}-{os.getpid()}"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's live process
        return True
    return True


def sweep_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temp siblings of ``path`` left by killed writers on this host; returns them."""
    path = Path(path)
    prefix = f".{path.name}."
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        m = _TEMP_OWNER.match(entry.name[len(prefix):])
        if m is None or m["host"] != _HOST or int(m["pid"]) == os.getpid() or _running(int(m["pid"])):
            continue
        stale = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def check_output(path: str | os.PathLike, *, directory: bool = False, what: str = "output") -> Path:
    """Fail before any work when ``path`` clearly cannot be written: a directory where a file goes
    (or a file where a directory goes), a file among its parents, an unwritable parent."""
    from .errors import OutputError

    path = Path(path)
    if path.exists() and path.is_dir() != directory:
        kind = "a file, not a directory" if directory else "a directory, not a file"
        raise OutputError(f"{what} {path} is {kind}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{what} {path} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path} cannot be created: {parent} is not writable")
    return path


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """OSErrors of ragtune's own file operations on ``path`` become OutputErrors naming it."""
    from .errors import OutputError

    try:
        yield
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}",
                          hint="check the output path, its permissions and free disk space") from None


def _tmp_sibling(path: Path, suffix: str = ".tmp") -> Path:
    sweep_stale_temps(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{_owner()}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~_umask())   # mkstemp makes 0600; outputs should look like any other file
    return Path(name)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temp sibling of ``path``; on clean exit fsync and rename it over ``path``."""
    path = check_output(path)
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_sibling(path)
    try:
        kwargs: dict[str, Any] = {} if "b" in mode else {"encoding": encoding}
        with _writing(path):
            fh = open(tmp, mode, **kwargs)
        with fh:
            yield fh
            with _writing(path):
                fh.flush()
                os.fsync(fh.fileno())
        with _writing(path):
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    with atomic_open(path, "w") as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=indent)
        fh.write("\n")
    return Path(path)


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> Path:
    with atomic_open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False))
            fh.write("\n")
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temp name; rename it to ``path`` only if the block succeeds.

    An existing ``path`` is replaced. A killed process leaves only a ``.tmp-*`` sibling, which no
    loader mistakes for a finished directory.
    """
    path = check_output(path, directory=True)   # never replaces a file with a directory
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_temps(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{_owner()}.", dir=path.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a model dir should be readable like any other
    try:
        yield tmp
        with _writing(path):
            if path.exists():
                trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-{_owner()}.", dir=path.parent))
                os.replace(path, trash / "old")
                os.replace(tmp, path)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def new_run_id() -> str:
    """Sortable, collision-free id for output files (not a second-resolution timestamp)."""
    import time
    import uuid

    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]


def sha256_file(path: str | os.PathLike) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
