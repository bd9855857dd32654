"""One logger for the whole package.

Library code logs normal progress at INFO and problems at WARNING/ERROR, and never configures
logging on its own: the CLI does (:func:`setup_logging`: INFO shown by default, ``-q`` for warnings
only, ``-v`` for debug). A run that writes its own log file (a stage of ``ragtune run``, a fine-tune's
``train.log``) uses :func:`log_to_file`, which captures INFO into that file for the duration of the
block without changing what the caller's own handlers show, and restores everything afterwards.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

LOGGER_NAME = "ragtune"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def get_logger(name: str | None = None) -> logging.Logger:
    """``get_logger(__name__)`` gives a child of the ``ragtune`` logger."""
    if not name or name == LOGGER_NAME:
        return logging.getLogger(LOGGER_NAME)
    if not name.startswith(LOGGER_NAME + "."):
        name = f"{LOGGER_NAME}.{name}"
    return logging.getLogger(name)


def setup_logging(verbosity: int = 1) -> None:
    """The CLI's logging: 0 = warnings (``-q``), 1 = progress at INFO (default), 2 = debug (``-v``)."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    root = logging.getLogger(LOGGER_NAME)
    root.setLevel(level)
    root.handlers.clear()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbosity > 1
                                           else "%(message)s"))
    root.addHandler(console)
    root.propagate = False


class _AtLeast(logging.Filter):
    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


class _Forward(logging.Handler):
    """Passes records at or above ``level`` on to ``target``'s handlers (what propagation did)."""

    def __init__(self, target: logging.Logger, level: int):
        super().__init__()
        self.target, self.min_level = target, level

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= self.min_level:
            logger: logging.Logger | None = self.target
            while logger is not None:
                for h in logger.handlers:
                    if record.levelno >= h.level:
                        h.handle(record)
                logger = logger.parent if logger.propagate else None


@contextlib.contextmanager
def log_to_file(path: str | Path, level: int = logging.INFO) -> Iterator[logging.Handler]:
    """Append ragtune's log records at ``level`` and above to ``path`` while the block runs.

    When the ragtune logger would drop those records (nobody asked for INFO), it is lowered for the
    block only, and the caller's handlers keep their threshold: a gate filter on ragtune's own
    handlers and a forwarder in place of propagation show them exactly what they showed before."""
    logger = logging.getLogger(LOGGER_NAME)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    effective = logger.getEffectiveLevel()
    old_level, old_propagate, others = logger.level, logger.propagate, list(logger.handlers)
    gate = _AtLeast(effective)
    forward = None
    if effective > level:
        logger.setLevel(level)
        for h in others:
            h.addFilter(gate)
        if logger.propagate and logger.parent is not None:
            forward = _Forward(logger.parent, effective)
            logger.addHandler(forward)
            logger.propagate = False
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        handler.close()
        if forward is not None:
            logger.removeHandler(forward)
        for h in others:
            h.removeFilter(gate)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
