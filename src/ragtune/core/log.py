"""One logger for the whole package: quiet by default (warnings), ``-v`` for info, ``-vv`` for debug."""
from __future__ import annotations

import logging
import sys

LOGGER_NAME = "ragtune"


def get_logger(name: str | None = None) -> logging.Logger:
    """``get_logger(__name__)`` gives a child of the ``ragtune`` logger."""
    if not name or name == LOGGER_NAME:
        return logging.getLogger(LOGGER_NAME)
    if not name.startswith(LOGGER_NAME + "."):
        name = f"{LOGGER_NAME}.{name}"
    return logging.getLogger(name)


def setup_logging(verbosity: int = 0, logfile: str | None = None) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    root = logging.getLogger(LOGGER_NAME)
    root.setLevel(min(level, logging.INFO) if logfile else level)
    root.handlers.clear()
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(console)
    if logfile:
        fh = logging.FileHandler(logfile, encoding="utf-8")
        fh.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)
    root.propagate = False
