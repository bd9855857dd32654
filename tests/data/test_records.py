"""The structured-output data generator (clinic notes -> JSON records)."""
from __future__ import annotations

import json
import re

from ragtune.data.records import generate_records, record_schema


def test_same_seed_same_bytes_and_different_seed_differs():
    a, b = generate_records(30, seed=3), generate_records(30, seed=3)
    assert json.dumps(a) == json.dumps(b)
    assert json.dumps(generate_records(30, seed=4)) != json.dumps(a)


def test_records_follow_the_schema_and_say_only_what_the_note_says():
    import jsonschema

    validator = jsonschema.Draft202012Validator(record_schema())
    rows = generate_records(200, seed=0)
    seen_optional = {"temperature": 0, "weight": 0}
    for row in rows:
        rec = json.loads(row["output"])
        validator.validate(rec)
        note = row["input"]
        assert rec["patient"]["id"] in note and rec["diagnosis"] in note
        bp = rec["vitals"]["blood_pressure"]
        assert re.search(rf"{bp['systolic']}(/| over ){bp['diastolic']} mmHg", note)
        for key in seen_optional:
            if key in rec["vitals"]:
                seen_optional[key] += 1
                v = rec["vitals"][key]
                assert f"{v['value']} {v['unit']}" in note
        for med in rec["medications"]:
            assert f"{med['name']} {med['dose']['value']} {med['dose']['unit']} {med['frequency']}" in note
        if rec["labs"]:  # the lab system's export is a JSON block inside the note, verbatim
            assert note.endswith("Lab system export: " + json.dumps({"labs": rec["labs"]}, ensure_ascii=False))
        else:
            assert "{" not in note
    assert 0 < seen_optional["temperature"] < 200 and 0 < seen_optional["weight"] < 200  # really optional


def test_augment_json_corrupts_the_lab_block_of_the_notes(tmp_path):
    from ragtune.data.augment import AugmentJsonConfig, augment_json

    rows = [r for r in generate_records(60, seed=1) if "{" in r["input"]]
    src = tmp_path / "clean.json"
    src.write_text(json.dumps(rows, ensure_ascii=False))
    augment_json(src, tmp_path / "noisy.json", AugmentJsonConfig(fraction=1.0, seed=0))
    noisy = json.loads((tmp_path / "noisy.json").read_text())
    assert len(noisy) == len(rows)
    for clean, bad in zip(rows, noisy):
        assert bad["output"] == clean["output"]          # the target stays clean
        head = clean["input"].split("\nLab system export: ")[0]
        assert bad["input"].startswith(head)             # the free text is untouched
        block = bad["input"].split("\nLab system export: ")[1]
        try:
            json.loads(block)
            broken = False
        except json.JSONDecodeError:
            broken = True
        assert broken
