import json
import random

import pytest

from ragtune.cli import main
from ragtune.core.errors import ConfigError
from ragtune.data import augment_json, corrupt_json
from ragtune.data.augment import CORRUPTIONS, find_json_span

from .helpers import read_jsonl, write_json, write_jsonl


def _is_json(text):
    try:
        json.loads(text)
        return True
    except json.JSONDecodeError:
        return False


def extraction_rows(n=40):
    rows = []
    for i in range(n):
        target = {"name": f"pump {i}", "serial": f"SN-{i:04d}", "parts": [{"id": i, "qty": 2}, {"id": i + 1, "qty": 1}]}
        draft = dict(target, note="draft")
        rows.append({"instruction": "Fix and normalise this record as JSON.",
                     "input": "Record: " + json.dumps(draft) + " (from OCR)",
                     "output": json.dumps(target)})
    rows.append({"instruction": "no json here", "input": "plain text", "output": "{}"})
    return rows


def test_fraction_targets_kept_inputs_broken(tmp_path):
    rows = extraction_rows()
    src = write_json(tmp_path / "d.json", rows)
    summary = augment_json(src, tmp_path / "out.json", seed=1)
    out = json.loads((tmp_path / "out.json").read_text())
    changed = [i for i, (a, b) in enumerate(zip(rows, out)) if a != b]
    assert len(out) == len(rows) and len(changed) == round(0.25 * len(rows)) == summary.notes["corrupted"]
    for i in changed:
        assert out[i]["output"] == rows[i]["output"] and out[i]["instruction"] == rows[i]["instruction"]
        assert out[i]["input"].startswith("Record: ") and out[i]["input"].endswith(" (from OCR)")
        span = out[i]["input"][len("Record: "):-len(" (from OCR)")]
        assert not _is_json(span)
    assert sum(summary.notes["corruptions"].values()) == len(changed)


def test_deterministic_per_seed(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", extraction_rows())
    augment_json(src, tmp_path / "a.jsonl", seed=5)
    augment_json(src, tmp_path / "b.jsonl", seed=5)
    augment_json(src, tmp_path / "c.jsonl", seed=6)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()


def test_source_output_append_and_messages(tmp_path):
    rows = extraction_rows(8)
    src = write_json(tmp_path / "d.json", rows)
    s = augment_json(src, tmp_path / "o.json", fraction=0.5, source="output", append=True, seed=2)
    out = json.loads((tmp_path / "o.json").read_text())
    assert out[:len(rows)] == rows and len(out) == len(rows) + s.notes["corrupted"]
    for extra in out[len(rows):]:
        assert _is_json(extra["output"]) and not _is_json(extra["input"])
    msgs = [{"messages": [{"role": "user", "content": r["input"]}, {"role": "assistant", "content": r["output"]}]}
            for r in rows]
    src = write_jsonl(tmp_path / "m.jsonl", msgs)
    augment_json(src, tmp_path / "mo.jsonl", fraction=1.0, seed=2)
    out = read_jsonl(tmp_path / "mo.jsonl")
    assert sum(o != m for o, m in zip(out, msgs)) == len(msgs) - 1   # all but the plain-text row
    assert all(o["messages"][1] == m["messages"][1] for o, m in zip(out, msgs))


def test_every_corruption_breaks_json():
    text = json.dumps({"a": [1, 2, {"b": "c"}], "d": "e, f"})
    rng = random.Random(0)
    for name, fn in CORRUPTIONS.items():
        broken = fn(text, rng)
        assert broken is not None and not _is_json(broken), name
    assert corrupt_json("1", random.Random(0)) is None
    assert find_json_span('x {"a": 1} y') == (2, 10) and find_json_span("no json") is None


def test_too_few_json_records_is_reported_and_bad_fraction_rejected(tmp_path, capsys):
    rows = [{"instruction": "i", "input": "plain", "output": "o"}] * 3 + extraction_rows(1)[:1]
    src = write_json(tmp_path / "d.json", rows)
    s = augment_json(src, tmp_path / "o.json", fraction=1.0)
    assert s.notes["corrupted"] == 1 and s.notes["skipped (no usable JSON)"] == 3 and "warning" in s.notes
    with pytest.raises(ConfigError, match="fraction"):
        augment_json(src, tmp_path / "o.json", fraction=1.5)
    assert main(["data", "augment-json", str(src), str(tmp_path / "c.json"), "--fraction", "0.5", "--seed", "3"]) == 0
    assert "corrupted: 1" in capsys.readouterr().out
