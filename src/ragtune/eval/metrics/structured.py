"""Metrics for structured (JSON) output: does it parse, does it follow the schema, are the fields right.

- ``json_valid`` (binary): the prediction is one JSON document (``json.loads``: what a front end
  parsing the answer does). ``extract=True`` also accepts one JSON object/array inside other text
  (e.g. a ```json fence).
- ``json_schema_valid`` (binary): valid JSON that validates against ``json_schema`` (a JSON Schema file
  or an inline object; checked with the ``jsonschema`` package, draft from ``$schema``, else 2020-12).
- ``json_field_precision`` / ``json_field_recall`` / ``json_field_f1`` (continuous): the
  prediction's leaf fields against the reference JSON's. A leaf is a scalar at a path; objects are
  matched key by key, lists element by element (``lists: ordered``) or by the best pairing of
  elements (``unordered``, the default: a list of symptoms has no order); numbers are equal within
  ``rel_tol`` / ``abs_tol``, strings after ``strip`` (and case folding unless ``case_sensitive``);
  a number written as a string is a mismatch (the type is part of the structure). An empty object
  or list counts as one leaf. A prediction that does not parse scores 0 with the reason.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from ...core.config import Config
from ...core.errors import ConfigError
from ..base import EvalItem, Metric, MetricResult, register_metric

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def parse_json(text: str, extract: bool = False) -> tuple[Any, str | None]:
    """(value, None) or (None, why it is not JSON)."""
    stripped = (text or "").strip()
    if not stripped:
        return None, "empty prediction"
    try:
        return json.loads(stripped), None
    except json.JSONDecodeError as exc:
        error = f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    if extract:
        candidates = [m.group(1).strip() for m in _FENCE.finditer(stripped)]
        for opener, closer in ("{}", "[]"):
            start, end = stripped.find(opener), stripped.rfind(closer)
            if 0 <= start < end:
                candidates.append(stripped[start:end + 1])
        for cand in candidates:
            try:
                return json.loads(cand), None
            except json.JSONDecodeError:
                continue
    return None, error


class JsonParams(Config):
    extract: bool = Field(False, description="Also accept one JSON object/array inside other text (e.g. a ```json fence).")


@register_metric("json_valid")
class JsonValid(Metric):
    """1 when the prediction parses as JSON, else 0 with the parser's message."""
    title = "JSON valid"
    kind = "binary"
    Params = JsonParams
    extract: bool

    def score(self, item: EvalItem) -> MetricResult:
        _, error = parse_json(item.prediction, self.extract)
        return MetricResult.ok(0.0, error) if error else MetricResult.ok(1.0)


class SchemaParams(JsonParams):
    json_schema: dict[str, Any] | str = Field(description="JSON Schema: a file path or an inline object.")

    @field_validator("json_schema")
    @classmethod
    def _load(cls, value: Any) -> dict[str, Any]:
        if isinstance(value, str):
            path = Path(value).expanduser()
            if not path.exists():
                raise ValueError(f"schema file {path} does not exist")
            try:
                value = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ValueError(f"schema file {path} is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError("a JSON Schema must be an object")
        validator = _validator_class(value)  # a clear error when jsonschema is missing
        from jsonschema.exceptions import SchemaError

        try:
            validator.check_schema(value)
        except SchemaError as exc:  # its message names the bad keyword
            raise ValueError(f"invalid JSON Schema: {exc.message}") from None
        return value


def _validator_class(schema: dict[str, Any]):
    try:
        import jsonschema
    except ImportError:
        raise ConfigError("json_schema_valid needs the jsonschema package",
                          hint="pip install 'ragtune[eval]'") from None
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)


@register_metric("json_schema_valid")
class JsonSchemaValid(Metric):
    """1 when the prediction parses and validates against ``json_schema``, else 0 with the first error
    (its JSON path and message)."""
    title = "JSON schema valid"
    kind = "binary"
    Params = SchemaParams
    extract: bool
    json_schema: dict[str, Any]

    def __init__(self, params: Any = None, **values: Any):
        super().__init__(params, **values)
        self._validator = _validator_class(self.json_schema)(self.json_schema)

    def score(self, item: EvalItem) -> MetricResult:
        value, error = parse_json(item.prediction, self.extract)
        if error:
            return MetricResult.ok(0.0, error)
        best = next(iter(sorted(self._validator.iter_errors(value), key=lambda e: len(e.path))), None)
        if best is None:
            return MetricResult.ok(1.0)
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in best.absolute_path)
        return MetricResult.ok(0.0, f"schema: {where}: {best.message}")


# -- field-level comparison -----------------------------------------------------------------------------
class FieldParams(JsonParams):
    rel_tol: float = Field(0.0, ge=0, description="Numbers match within this relative tolerance (0.01 = 1%).")
    abs_tol: float = Field(0.0, ge=0, description="Numbers match within this absolute tolerance.")
    case_sensitive: bool = Field(False, description="Compare strings case-sensitively (always after strip).")
    lists: Literal["ordered", "unordered"] = Field("unordered", description="Match list elements by position, or by the best pairing.")


def _leaves(value: Any) -> int:
    if isinstance(value, dict):
        return sum(_leaves(v) for v in value.values()) or 1
    if isinstance(value, list):
        return sum(_leaves(v) for v in value) or 1
    return 1


class FieldMatcher:
    """Counts matching leaves of two JSON values (see the module docs for the rules)."""

    def __init__(self, params: FieldParams):
        self.p = params

    def scalar_equal(self, a: Any, b: Any) -> bool:
        if isinstance(a, bool) or isinstance(b, bool):
            return a is b
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return math.isclose(a, b, rel_tol=self.p.rel_tol, abs_tol=self.p.abs_tol)
        if isinstance(a, str) and isinstance(b, str):
            a, b = a.strip(), b.strip()
            return a == b if self.p.case_sensitive else a.casefold() == b.casefold()
        return a is None and b is None

    def matched(self, pred: Any, ref: Any) -> int:
        if isinstance(pred, dict) and isinstance(ref, dict):
            if not pred and not ref:
                return 1
            return sum(self.matched(pred[k], ref[k]) for k in pred.keys() & ref.keys())
        if isinstance(pred, list) and isinstance(ref, list):
            if not pred and not ref:
                return 1
            if self.p.lists == "ordered":
                return sum(self.matched(a, b) for a, b in zip(pred, ref))
            return self._best_pairing(pred, ref)
        if isinstance(pred, (dict, list)) or isinstance(ref, (dict, list)):
            return 0
        return int(self.scalar_equal(pred, ref))

    def _best_pairing(self, pred: list, ref: list) -> int:
        """Greedy maximum pairing of elements by matched leaves (lists in records are short)."""
        scores = sorted(((self.matched(a, b), i, j) for i, a in enumerate(pred) for j, b in enumerate(ref)),
                        key=lambda t: (-t[0], t[1], t[2]))
        used_p, used_r, total = set(), set(), 0
        for score, i, j in scores:
            if score and i not in used_p and j not in used_r:
                used_p.add(i)
                used_r.add(j)
                total += score
        return total

    def compare(self, pred: Any, ref: Any) -> tuple[int, int, int]:
        """(matched leaves, predicted leaves, reference leaves)."""
        return self.matched(pred, ref), _leaves(pred), _leaves(ref)


class _FieldMetric(Metric):
    needs = ("prediction", "reference")
    Params = FieldParams
    params: FieldParams
    extract: bool
    part: str = "f1"

    def score(self, item: EvalItem) -> MetricResult:
        if not (item.prediction or "").strip():
            return MetricResult.ok(0.0, "empty prediction")
        ref, ref_error = parse_json(item.reference)
        if ref_error:
            return MetricResult.error(f"reference is {ref_error}")
        pred, error = parse_json(item.prediction, self.extract)
        if error:
            return MetricResult.ok(0.0, error)
        matched, n_pred, n_ref = FieldMatcher(self.params).compare(pred, ref)
        precision, recall = matched / n_pred, matched / n_ref
        f1 = 2 * precision * recall / (precision + recall) if matched else 0.0
        value = {"precision": precision, "recall": recall, "f1": f1}[self.part]
        return MetricResult.ok(round(value, 6), None, matched=matched, predicted_fields=n_pred, reference_fields=n_ref)


@register_metric("json_field_precision")
class JsonFieldPrecision(_FieldMetric):
    """Share of the prediction's leaf fields that equal the reference's at the same place."""
    title = "JSON field precision"
    part = "precision"


@register_metric("json_field_recall")
class JsonFieldRecall(_FieldMetric):
    """Share of the reference's leaf fields the prediction reproduces."""
    title = "JSON field recall"
    part = "recall"


@register_metric("json_field_f1")
class JsonFieldF1(_FieldMetric):
    """Harmonic mean of field precision and recall."""
    title = "JSON field F1"
    part = "f1"
