"""Read records from JSON arrays, JSONL, CSV and Parquet, keeping where each record came from.

Every record carries its 0-based ``index`` and, for JSONL, its 1-based ``line`` so that any error
can name the exact place. JSON and JSONL go through the standard library's ``json`` parser (not a
columnar reader): Arrow would unify the schema across rows and fail or coerce on exactly the
mistyped records that ``validate`` exists to point at. CSV and Parquet go through pyarrow.

This is the one reader of every data file ragtune takes (training, eval sets, predictions,
embedding sets, inference inputs, knowledge-base JSON): a UTF-8 BOM, a ``{"data": [...]}`` wrapper,
JSON Lines saved as ``.json``, a file that is not UTF-8 or a directory given as a file behave the
same in every command. :func:`read_items` is the short form for callers that want plain values.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

from ..core.errors import DataError

SUFFIX_KINDS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
                ".parquet": "parquet", ".pq": "parquet"}
# CSV cells are flat strings; these columns hold JSON lists and are decoded after reading.
CSV_JSON_COLUMNS = ("messages", "history", "pos", "neg", "corpus", "answers", "all_answers")


@dataclass
class Record:
    data: Any
    index: int                 # 0-based position in the file
    line: int | None = None    # 1-based line for JSONL (and CSV: the row's first line if simple)

    @property
    def where(self) -> str:
        return f"record {self.index}" + (f" (line {self.line})" if self.line is not None else "")


@dataclass
class BadLine:
    """A JSONL line that is not valid JSON: kept so ``validate`` can report it instead of stopping."""
    index: int
    line: int
    error: str


def file_kind(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_KINDS:
        raise DataError(f"unsupported file type '{suffix or '(none)'}'", file=str(path),
                        hint="use .json (array), .jsonl, .csv or .parquet")
    return SUFFIX_KINDS[suffix]


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` as a Path if it is an existing file, else a DataError saying what it is instead."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"the {what} is a directory, not a file", file=str(path))
    if not path.is_file():
        raise DataError(f"the {what} does not exist", file=str(path))
    return path


@overload
def read_records(path: str | os.PathLike, *, keep_bad_lines: Literal[False] = False) -> list[Record]: ...
@overload
def read_records(path: str | os.PathLike, *, keep_bad_lines: bool) -> list[Record | BadLine]: ...


def read_records(path: str | os.PathLike, *, keep_bad_lines: bool = False) -> list[Record] | list[Record | BadLine]:
    """All records of ``path``. A JSONL line that does not parse raises :class:`DataError` naming
    the line, unless ``keep_bad_lines`` (then it is returned as a :class:`BadLine`)."""
    path = Path(path)
    if path.is_dir():
        raise DataError("is a directory, not a data file", file=str(path),
                        hint="pass the .json/.jsonl/.csv/.parquet file inside it")
    kind = file_kind(path)
    if not path.is_file():
        raise DataError("does not exist", file=str(path))
    reader = {"json": _read_json, "jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}[kind]
    records = list(reader(path))
    if not keep_bad_lines:
        for r in records:
            if isinstance(r, BadLine):
                raise DataError(f"line {r.line} is not valid JSON: {r.error}", file=str(path), record=r.index)
    return records


def read_items(path: str | os.PathLike, *, what: str = "file", objects: bool = True) -> list[Any]:
    """The records' values, for readers that need no line numbers: an empty file or one with no
    records is an error (``what`` names the file in it: "eval set", "predictions file"), and with
    ``objects`` every record must be a JSON object (a row with named fields)."""
    records = read_records(path)
    if not records:
        empty = Path(path).stat().st_size == 0
        raise DataError(f"{what} is empty" if empty else f"{what} holds no records", file=str(path))
    if objects:
        for r in records:
            if not isinstance(r.data, dict):
                raise DataError(f"{r.where} must be an object with named fields, got {type(r.data).__name__}",
                                file=str(path), record=r.index)
    return [r.data for r in records]


def read_rows(path: str | os.PathLike) -> list[Record]:
    """Like :func:`read_records` but every record must be a JSON object (a row with named fields)."""
    records = read_records(path)
    for r in records:
        if not isinstance(r.data, dict):
            raise DataError(f"{r.where} must be an object with named fields, got {type(r.data).__name__}",
                            file=str(path), record=r.index)
    return records


def read_text(path: Path) -> str:
    """The file as text: UTF-8 (a BOM is dropped); anything else is a DataError naming the line and
    the byte, not a UnicodeDecodeError traceback."""
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise DataError("is a directory, not a file", file=str(path)) from None
    except OSError as exc:
        raise DataError(f"cannot be read: {exc.strerror}", file=str(path)) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"is not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {line} (offset {exc.start})",
                        file=str(path), hint="re-save it as UTF-8 (e.g. iconv -f GBK -t UTF-8 IN > OUT)") from None


def _read_json(path: Path) -> Iterator[Record | BadLine]:
    text = read_text(path)
    if not text.strip():
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # JSON Lines saved as .json is common (``datasets``' to_json writes exactly that, and the
        # chapter's scripts name such files train.json): read it as JSONL, with line numbers.
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            yield from _jsonl_records(text)
            return
        raise DataError(f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                        file=str(path)) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]          # {"data": [...]} wrappers (SQuAD files, HF exports)
    if not isinstance(data, list):
        raise DataError(f"a .json file must hold an array of records, got {type(data).__name__}",
                        file=str(path), hint="or use .jsonl with one record per line")
    for i, item in enumerate(data):
        yield Record(item, i)


def _read_jsonl(path: Path) -> Iterator[Record | BadLine]:
    yield from _jsonl_records(read_text(path))


def _jsonl_records(text: str) -> Iterator[Record | BadLine]:
    index = 0
    # split on "\n" only: str.splitlines would also split inside a record at U+2028 and friends
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield Record(json.loads(line), index, lineno)
        except json.JSONDecodeError as exc:
            yield BadLine(index, lineno, f"column {exc.colno}: {exc.msg}")
        index += 1


def _read_csv(path: Path) -> Iterator[Record]:
    import pyarrow as pa
    from pyarrow import csv as pacsv

    try:
        # Read every column as text: type inference would turn "007" into 7 or "" into null.
        names = pacsv.open_csv(path).schema.names
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, strings_can_be_null=False))
    except (pa.ArrowInvalid, StopIteration) as exc:
        raise DataError(f"not a valid CSV file: {exc}", file=str(path)) from None
    for i, row in enumerate(table.to_pylist()):
        for col in CSV_JSON_COLUMNS:
            value = row.get(col)
            if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
                try:
                    row[col] = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise DataError(f"column holds invalid JSON: {exc.msg}", file=str(path),
                                    record=i, field=col) from None
        yield Record(row, i)


def _read_parquet(path: Path) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"not a valid Parquet file: {exc}", file=str(path)) from None
    for i, row in enumerate(table.to_pylist()):
        yield Record(row, i)
