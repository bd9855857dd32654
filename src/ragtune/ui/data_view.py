"""The Data page: a data file's records with the validator's report (ragtune.data.validate, the
same one training runs, so what is red here is what training refuses) and token lengths against
``cutoff_len``."""
from __future__ import annotations

import threading
from typing import Any

from ..core.errors import ConfigError

_tokenizers: dict[str, Any] = {}
_tok_lock = threading.Lock()
MAX_TEXT = 600           # characters of one string shown in the preview (the full record is on disk)


def _tokenizer(ref: str) -> Any:
    """Loaded once per reference: tokenizers take seconds to load, the page is used repeatedly."""
    from ..data.validate import load_tokenizer

    with _tok_lock:
        if ref not in _tokenizers:
            _tokenizers[ref] = load_tokenizer(ref)
        return _tokenizers[ref]


def _short(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + f"… ({len(value)} characters)"
    if isinstance(value, list):
        return [_short(v) for v in value]
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items()}
    return value


def preview(path: str, *, cutoff_len: int | None = None, tokenizer: str | None = None, offset: int = 0,
            limit: int = 50, only_issues: bool = False) -> dict[str, Any]:
    from ..data.readers import BadLine, read_records
    from ..data.validate import validate

    if cutoff_len is not None and not tokenizer:
        raise ConfigError("cutoff_len: counting tokens needs a tokenizer (a model name or directory)")
    if offset < 0 or limit < 1:
        raise ConfigError("offset must be >= 0 and limit >= 1")
    tok = _tokenizer(tokenizer) if tokenizer and cutoff_len is not None else None
    report = validate(path, cutoff_len=cutoff_len, tokenizer=tok)
    by_record: dict[int, list[dict[str, Any]]] = {}
    for issue in report.issues:
        by_record.setdefault(issue.record, []).append(
            {"kind": issue.kind, "field": issue.field, "message": issue.message, "line": issue.line})
    records = read_records(path, keep_bad_lines=True)
    chosen = [r for r in records if r.index in by_record] if only_issues else records
    rows = []
    for r in chosen[offset:offset + limit]:
        rows.append({"index": r.index, "line": r.line, "data": None if isinstance(r, BadLine) else _short(r.data),
                     "raw_error": r.error if isinstance(r, BadLine) else None, "issues": by_record.get(r.index, [])})
    return {"report": report.to_dict(), "summary": report.summary(max_issues=10), "records": rows,
            "offset": offset, "limit": limit, "matching": len(chosen), "lengths": report.lengths or [],
            "cutoff_len": report.cutoff_len}
