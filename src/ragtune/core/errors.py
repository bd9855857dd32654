"""ragtune's exceptions.

Library code raises these with a message that says what went wrong *and how to fix it*; only the CLI
layer (``ragtune.cli``) turns them into exit codes and short messages.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator


class RagtuneError(Exception):
    """Base class. ``hint`` is the fix, shown on its own line by the CLI."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(RagtuneError, ValueError):
    """An unknown, mistyped or invalid configuration key or value."""


class OutputError(ConfigError):
    """An output path that cannot be written: a directory where a file goes (or the reverse), a
    parent that cannot be created, no permission, a full disk."""


class DataError(RagtuneError, ValueError):
    """Bad input data. Names the file, the record and the field when known."""

    def __init__(self, message: str, *, file: str | None = None, record: int | None = None,
                 field: str | None = None, hint: str | None = None):
        where = ", ".join(p for p in (
            f"file {file}" if file else "",
            f"record {record}" if record is not None else "",
            f"field '{field}'" if field else "") if p)
        super().__init__(f"{where}: {message}" if where else message, hint)
        self.file, self.record, self.field = file, record, field


class ModelNotFoundError(RagtuneError, LookupError):
    """A model name/path that cannot be resolved (offline, typo, missing files)."""


class ModelCorruptedError(RagtuneError):
    """A materialised model in the cache failed verification."""


class BackendError(RagtuneError, RuntimeError):
    """An optional backend (vLLM, LLaMA-Factory, FlagEmbedding, ...) failed or is not installed."""



class Terminated(KeyboardInterrupt):
    """SIGTERM (what Slurm, Kubernetes and `kill` send), raised in the main thread like Ctrl-C, so
    that cleanups run (atomic writes drop their temps, training saves a checkpoint)."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (elsewhere: no-op)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM are held and re-sent when it ends, so their usual
    handlers run then. An optimizer step and its bookkeeping happen completely or not at all: a
    signal landing between ``opt.step()`` and the step counter would otherwise checkpoint updated
    weights under the previous step, and a resume would apply that step twice."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum, frame):
        pending.append(signum)

    old = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)
