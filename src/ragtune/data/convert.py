"""``ragtune data convert --from F --to T IN OUT``: one entry point for every conversion.

- ``squad -> alpaca|messages``: span-extraction rows to instruction data (see :mod:`ragtune.data.squad`).
- ``alpaca|messages|auto -> alpaca|messages``: lossless reformatting (see :mod:`ragtune.data.formats`);
  invalid records are errors (run ``validate`` for the full list), never silently dropped.
"""
from __future__ import annotations

import os
from typing import cast

from ..core.errors import ConfigError, DataError
from .formats import Format, convert_record, detect_format
from .readers import read_records
from .squad import squad_to_alpaca, write_records
from .summary import Summary
from .validate import validate_path_or_raise

SOURCES = ("squad", "alpaca", "messages", "auto")
TARGETS = ("alpaca", "messages")


def convert(path: str | os.PathLike, out: str | os.PathLike, *, source: str = "squad", to: str = "alpaca",
            template: str | None = None, template_lang: str | None = None) -> Summary:
    if source not in SOURCES or to not in TARGETS:
        raise ConfigError(f"unsupported conversion {source} -> {to}; --from is one of {', '.join(SOURCES)}, "
                          f"--to one of {', '.join(TARGETS)}")
    from ..core.io import check_output

    check_output(out, what="OUT")
    if source == "squad":
        return squad_to_alpaca(path, out, template=template, template_lang=template_lang, to=to)
    if template is not None or template_lang is not None:
        raise ConfigError("--template/--template-lang only apply to --from squad")
    return reformat(path, out, source=source, to=cast(Format, to))   # one of TARGETS (checked above)


def reformat(path: str | os.PathLike, out: str | os.PathLike, *, source: str = "auto",
             to: Format = "messages") -> Summary:
    """Alpaca <-> messages for a whole file, after validating every record."""
    file = str(path)
    records = read_records(path)
    fmt = detect_format(records, file)
    if source != "auto" and fmt != source:
        raise DataError(f"--from {source} but the records are {fmt}", file=file)
    validate_path_or_raise(path)
    summary = Summary(f"convert {fmt}->{to}", file, str(out), records_in=len(records))
    items = [convert_record(r.data, to, fmt) for r in records]
    write_records(out, items)
    summary.records_out = len(items)
    return summary
