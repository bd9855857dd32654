"""json_valid, json_schema_valid and the field-level precision / recall / F1."""
from __future__ import annotations

import json

import pytest

from ragtune.core.errors import ConfigError
from ragtune.eval.base import EvalItem, get_metric, metric_class

REF = {"patient": {"age": 54, "sex": "female"}, "symptoms": ["headache", "dizziness"],
       "bp": {"systolic": 150, "diastolic": 95, "unit": "mmHg"}, "meds": []}


def item(pred, ref=REF) -> EvalItem:
    return EvalItem(prediction=pred if isinstance(pred, str) else json.dumps(pred),
                    reference=ref if isinstance(ref, str) else json.dumps(ref))


def test_metrics_describe_themselves():
    assert metric_class("json_valid").kind == "binary"
    assert metric_class("json_schema_valid").kind == "binary"
    for name in ("json_field_precision", "json_field_recall", "json_field_f1"):
        cls = metric_class(name)
        assert cls.kind == "continuous" and cls.higher_is_better
    assert get_metric("json_field_f1", rel_tol=0.01).describe()["params"] == {
        "extract": False, "rel_tol": 0.01, "abs_tol": 0.0, "case_sensitive": False, "lists": "unordered"}


@pytest.mark.parametrize("text,valid,reason", [
    ('{"a": 1}', 1.0, None),
    ('  [1, 2]\n', 1.0, None),
    ('{"a": 1,}', 0.0, "not valid JSON: Expecting property name enclosed in double quotes at line 1 column 9"),
    ("{'a': 1}", 0.0, "not valid JSON"),
    ('Here: {"a": 1}', 0.0, "not valid JSON"),
    ("", 0.0, "empty prediction"),
])
def test_json_valid(text, valid, reason):
    r = get_metric("json_valid").score(EvalItem(prediction=text))
    assert r.status == "ok" and r.value == valid
    assert (r.reason or "").startswith(reason or "")


def test_json_valid_extract_accepts_fences_and_surrounding_text():
    m = get_metric("json_valid", extract=True)
    assert m.score(EvalItem(prediction='Sure!\n```json\n{"a": 1}\n```')).value == 1.0
    assert m.score(EvalItem(prediction='The record is {"a": [1, 2]} as asked.')).value == 1.0
    assert m.score(EvalItem(prediction='no json here')).value == 0.0


def test_json_schema_valid_names_the_failing_path(tmp_path):
    schema = {"type": "object", "properties": {"bp": {"type": "object", "properties": {"systolic": {"type": "integer"}},
                                                      "required": ["systolic"]}}, "required": ["bp"]}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    m = get_metric("json_schema_valid", json_schema=str(path))
    assert m.score(item(REF)).value == 1.0
    bad = m.score(item({"bp": {"systolic": "150"}}))
    assert bad.value == 0.0 and bad.reason == "schema: $.bp.systolic: '150' is not of type 'integer'"
    missing = m.score(item({"patient": {}}))
    assert missing.reason == "schema: $: 'bp' is a required property"
    assert m.score(item("{not json")).reason.startswith("not valid JSON")


def test_json_schema_valid_rejects_bad_schemas_before_scoring(tmp_path):
    with pytest.raises(ConfigError, match="invalid JSON Schema: 'objekt' is not valid"):
        get_metric("json_schema_valid", json_schema={"type": "objekt"})
    with pytest.raises(ConfigError, match="schema file .*missing.json does not exist"):
        get_metric("json_schema_valid", json_schema=str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="json_schema"):
        get_metric("json_schema_valid")


def scores(pred, **params):
    return tuple(get_metric(f"json_field_{p}", **params).score(item(pred)).value for p in ("precision", "recall", "f1"))


def test_field_scores_exact_copy_is_perfect():
    assert scores(REF) == (1.0, 1.0, 1.0)
    assert get_metric("json_field_f1").score(item(REF)).details == {
        "matched": 8, "predicted_fields": 8, "reference_fields": 8}  # the empty list is one leaf


def test_field_scores_count_leaves():
    pred = {"patient": {"age": 54, "sex": "Female"},   # case-insensitive by default: match
            "symptoms": ["dizziness"],                   # 1 of 2 (unordered pairing)
            "bp": {"systolic": "150", "diastolic": 95, "unit": "mmHg"},  # a string is not the number
            "extra": True}                               # not in the reference
    # matched: age, sex, dizziness, diastolic, unit = 5; predicted leaves 7; reference leaves 8
    p, r, f = scores(pred)
    assert (p, r) == (round(5 / 7, 6), round(5 / 8, 6))
    assert f == round(2 * (5 / 7) * (5 / 8) / (5 / 7 + 5 / 8), 6)
    assert scores(pred, case_sensitive=True)[0] == round(4 / 7, 6)


def test_field_scores_numeric_tolerance_and_list_order():
    near = {**REF, "bp": {"systolic": 151, "diastolic": 95, "unit": "mmHg"}}
    assert scores(near)[2] < 1.0
    assert scores(near, rel_tol=0.01) == (1.0, 1.0, 1.0)
    assert scores(near, abs_tol=0.5)[2] < 1.0
    swapped = {**REF, "symptoms": ["dizziness", "headache"]}
    assert scores(swapped) == (1.0, 1.0, 1.0)
    assert scores(swapped, lists="ordered")[1] == round(6 / 8, 6)


def test_field_scores_unparseable_prediction_and_bad_reference():
    r = get_metric("json_field_f1").score(item('{"patient": '))
    assert r.status == "ok" and r.value == 0.0 and r.reason.startswith("not valid JSON")
    bad_ref = get_metric("json_field_recall").score(item(REF, ref="not json"))
    assert bad_ref.status == "error" and bad_ref.reason.startswith("reference is not valid JSON")
    with pytest.raises(ConfigError, match="rel_tol"):
        get_metric("json_field_f1", rel_tol=-0.1)
    with pytest.raises(ConfigError, match="lists"):
        get_metric("json_field_f1", lists="sorted")
