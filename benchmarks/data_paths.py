"""Where the benchmark scripts find their public data sets: the one resolver every script uses.

Order: an explicit path (a script's ``--data``/``--train``/``--test`` flag) > ``$RAGTUNE_DATA_DIR`` >
``<repo>/../shared/data`` (the layout the results were measured with). When the file is missing
there and the Hugging Face hub is reachable, the same public set is loaded with
``datasets.load_dataset`` (``cmrc2018``, ``virattt/financial-qa-10K``) and written once to that
place in the layout the scripts read. Offline with no file: a :class:`DataNotFound` naming the flag
and the environment variable.

    from data_paths import data_file
    train = data_file("cmrc2018/train.json", flag="--train", explicit=args.train)
"""
from __future__ import annotations

import json
import os
from pathlib import Path

ENV = "RAGTUNE_DATA_DIR"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO.parent / "shared" / "data"

# relative file -> (hub dataset id, split) of the public set it is a copy of
HUB_SETS: dict[str, tuple[str, str]] = {
    "cmrc2018/train.json": ("cmrc2018", "train"),
    "cmrc2018/test.json": ("cmrc2018", "test"),
    "cmrc2018/dev.json": ("cmrc2018", "validation"),
    "financial_qa_10k/data.json": ("virattt/financial-qa-10K", "train"),
}


class DataNotFound(FileNotFoundError):
    """A benchmark data file that is neither on disk nor loadable from the hub."""


def data_dir() -> Path:
    """``$RAGTUNE_DATA_DIR`` or ``<repo>/../shared/data``."""
    env = os.environ.get(ENV)
    return Path(env).expanduser() if env else DEFAULT_DIR


def _offline() -> bool:
    return any(os.environ.get(v, "0") not in ("0", "", "false", "False") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _from_hub(rel: str, target: Path) -> Path:
    from datasets import load_dataset

    name, split = HUB_SETS[rel]
    rows = [dict(r) for r in load_dataset(name, split=split)]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    tmp.replace(target)
    return target


def data_file(rel: str, *, flag: str = "--data", explicit: str | os.PathLike | None = None) -> Path:
    """The local path of benchmark data file ``rel`` (e.g. ``cmrc2018/train.json``)."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_file():
            return path
        raise DataNotFound(f"{flag} {path}: no such file")
    path = data_dir() / rel
    if path.is_file():
        return path
    where = f"{path} (from ${ENV})" if os.environ.get(ENV) else f"{path} (the default <repo>/../shared/data)"
    fix = (f"pass {flag} FILE, or set {ENV} to a folder holding {rel}"
           + (f" (it is a copy of the public set {HUB_SETS[rel][0]!r} on the Hugging Face hub)" if rel in HUB_SETS else ""))
    if rel not in HUB_SETS or _offline():
        raise DataNotFound(f"benchmark data {where} does not exist" + (" and the hub is offline" if rel in HUB_SETS else "")
                           + f"; {fix}")
    try:
        return _from_hub(rel, path)
    except Exception as exc:   # no network, no datasets package, unwritable folder: say what to do
        raise DataNotFound(f"benchmark data {where} does not exist and loading {HUB_SETS[rel][0]!r} from the "
                           f"Hugging Face hub failed ({type(exc).__name__}: {str(exc)[:200]}); {fix}") from None
