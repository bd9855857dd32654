"""Loading eval sets and prediction files, with errors that name file, record and field."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.errors import DataError
from .base import EvalItem

REFERENCE_FIELDS = ("answers", "answer", "reference", "output")
PREDICTION_FIELDS = ("prediction", "output")


def read_records(path: str | Path, what: str = "file") -> list[Any]:
    """Values of a JSON list, JSON Lines, CSV or Parquet file (the one reader,
    :func:`ragtune.data.readers.read_items`); predictions may be plain strings."""
    from ..data.readers import read_items

    return read_items(path, what=what, objects=False)


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
    records = read_records(path, "eval set")
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
    records = read_records(path, "predictions file")
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
