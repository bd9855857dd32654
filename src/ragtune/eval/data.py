"""Loading eval sets and prediction files, with errors that name file, record and field."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import DataError
from .base import EvalItem

REFERENCE_FIELDS = ("answers", "answer", "reference", "output")
PREDICTION_FIELDS = ("prediction", "output")


def read_records(path: str | Path) -> list[Any]:
    """A JSON list, or JSON Lines (one value per line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file does not exist", file=str(path))
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON at line {exc.lineno}: {exc.msg}", file=str(path)) from None
        return data
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"line {lineno} is not valid JSON ({exc.msg}); expected a JSON list or JSON Lines",
                            file=str(path), record=len(records)) from None
    if not records:
        raise DataError("file is empty", file=str(path))
    return records


def _answers(value: Any, file: str, i: int, key: str) -> list[str]:
    """A reference given as a string, a list of strings or a SQuAD-style {"text": [...]}."""
    if isinstance(value, dict) and "text" in value:
        value = value["text"]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise DataError("reference must be a string, a non-empty list of strings or {\"text\": [...]}, got "
                    f"{type(value).__name__}", file=file, record=i, field=key)


def load_evalset(path: str | Path) -> list[EvalItem]:
    """Eval items with ``question``, ``context`` and a reference in one of REFERENCE_FIELDS; an
    optional ``all_answers`` list feeds lenient exact match (else all given answers are used)."""
    file = str(path)
    records = read_records(path)
    items = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataError(f"each record must be an object, got {type(rec).__name__}", file=file, record=i)
        key = next((k for k in REFERENCE_FIELDS if k in rec), None)
        if key is None:
            raise DataError(f"no reference answer; expected one of {', '.join(REFERENCE_FIELDS)}",
                            file=file, record=i, field="answers")
        answers = _answers(rec[key], file, i, key)
        extra = _answers(rec["all_answers"], file, i, "all_answers") if "all_answers" in rec else []
        for f in ("question", "context"):
            if f in rec and not isinstance(rec[f], str):
                raise DataError(f"must be a string, got {type(rec[f]).__name__}", file=file, record=i, field=f)
        retrieved = rec.get("retrieved") or []
        items.append(EvalItem(question=rec.get("question", ""), context=rec.get("context", ""),
                              reference=answers[0], all_answers=list(dict.fromkeys(answers + extra)),
                              retrieved=list(retrieved), reference_contexts=list(rec.get("reference_contexts") or [])))
    return items


def load_predictions(path: str | Path, expected: int | None = None) -> list[str]:
    """Strings, or objects with a ``prediction``/``output`` field, in eval-set order."""
    file = str(path)
    records = read_records(path)
    if isinstance(records, dict):
        raise DataError("expected a list of predictions, got an object", file=file)
    preds = []
    for i, rec in enumerate(records):
        if isinstance(rec, dict):
            key = next((k for k in PREDICTION_FIELDS if k in rec), None)
            if key is None:
                raise DataError(f"object has no prediction; expected a field {' or '.join(PREDICTION_FIELDS)}",
                                file=file, record=i, field="prediction")
            rec = rec[key]
        if rec is None:
            rec = ""
        if not isinstance(rec, str):
            raise DataError(f"prediction must be a string, got {type(rec).__name__}", file=file, record=i,
                            field="prediction")
        preds.append(rec)
    if expected is not None and len(preds) != expected:
        raise DataError(f"{len(preds)} predictions for an eval set of {expected} items; predictions must be "
                        "in eval-set order, one per item", file=file,
                        hint="re-run inference on the same eval set")
    return preds
