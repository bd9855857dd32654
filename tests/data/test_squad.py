import json

import pytest

from ragtune.cli import main
from ragtune.core.errors import ConfigError, DataError
from ragtune.data import DEFAULT_TEMPLATE, TEMPLATES, convert, evalset, validate

from .helpers import read_jsonl, write_json, write_jsonl


def squad_rows():
    ctx = "The pump P-7 is in the north station. Replace its filter every 6 months. Pressure: 3 bar {x}."
    return [
        {"id": "a1", "context": ctx, "question": "Where is P-7?",
         "answers": {"text": ["the north station", "north station"], "answer_start": [ctx.index("the north"), ctx.index("north")]}},
        {"id": "a2", "context": ctx, "question": "How often?",
         "answers": {"text": ["every 6 months"], "answer_start": [3]}},                  # wrong offset
        {"id": "a3", "context": ctx, "question": "Unanswerable?", "answers": {"text": [], "answer_start": []}},
        {"id": "a4", "context": ctx, "question": "Pressure {question}?",
         "answers": {"text": ["3 bar"], "answer_start": [ctx.index("3 bar")]}},
    ]


def test_default_template_is_the_cmrc_one():
    assert DEFAULT_TEMPLATE == ("Please use the original text of the following paragraph to answer the question\n\n"
                                "### Known paragraph: {context}\n\n### Question: {question}\n")
    assert "{context}" in TEMPLATES["zh"] and "{question}" in TEMPLATES["zh"]


def test_convert_squad_to_alpaca(tmp_path):
    src = write_jsonl(tmp_path / "squad.jsonl", squad_rows())
    summary = convert(src, tmp_path / "train.json")
    items = json.loads((tmp_path / "train.json").read_text())
    assert summary.records_in == 4 and summary.records_out == 3 == len(items)
    assert summary.rejected == {"no answer": 1} and "id a3" in summary.examples["no answer"][0]
    assert summary.notes["answer_start mismatches"] == 1 and "a2" in summary.examples["answer_start mismatches"][0]
    ctx = squad_rows()[0]["context"]
    assert items[0] == {"instruction": DEFAULT_TEMPLATE.replace("{context}", ctx).replace("{question}", "Where is P-7?"),
                        "input": "", "output": "the north station"}
    # braces in context/question are inserted verbatim, never formatted again
    assert "Pressure {question}?" in items[2]["instruction"] and "{x}" in items[2]["instruction"]
    assert validate(tmp_path / "train.json").ok
    assert "answer_start mismatches: 1" in str(summary) and "rejected (no answer): 1" in str(summary)


def test_chinese_and_custom_templates(tmp_path):
    src = write_json(tmp_path / "squad.json", squad_rows())
    convert(src, tmp_path / "zh.jsonl", template_lang="zh")
    assert read_jsonl(tmp_path / "zh.jsonl")[0]["instruction"].startswith("请用下面段落的原文回答问题")
    convert(src, tmp_path / "c.json", template="Q: {question}\nC: {context}\nA:")
    assert json.loads((tmp_path / "c.json").read_text())[0]["instruction"].startswith("Q: Where is P-7?\nC: The pump")
    convert(src, tmp_path / "m.jsonl", to="messages")
    first = read_jsonl(tmp_path / "m.jsonl")[0]["messages"]
    assert [m["role"] for m in first] == ["user", "assistant"] and first[1]["content"] == "the north station"
    with pytest.raises(ConfigError, match=r"\{question\}"):
        convert(src, tmp_path / "x.json", template="Context: {context}")
    assert main(["data", "convert", "--from", "squad", "--to", "alpaca", "--template", "no placeholders",
                 str(src), str(tmp_path / "y.json")]) == 1
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "y.json").exists()


def test_evalset_shape(tmp_path):
    src = write_json(tmp_path / "squad.json", squad_rows())
    summary = evalset(src, tmp_path / "eval.json")
    items = json.loads((tmp_path / "eval.json").read_text())
    assert summary.records_out == 3 and summary.notes["answer_start mismatches"] == 1
    assert items[0] == {"id": "a1", "context": squad_rows()[0]["context"], "question": "Where is P-7?",
                        "answers": "the north station", "all_answers": ["the north station", "north station"]}


def test_nested_squad_layout_is_flattened(tmp_path):
    nested = {"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": "abc def", "qas": [{"id": "q1", "question": "what?", "answers": [{"text": "def", "answer_start": 4}]}]}]}]}
    (tmp_path / "nested.json").write_text(json.dumps(nested))
    summary = evalset(tmp_path / "nested.json", tmp_path / "e.json")
    assert summary.records_out == 1 and summary.notes["answer_start mismatches"] == 0
    assert json.loads((tmp_path / "e.json").read_text())[0]["answers"] == "def"


def test_schema_errors_name_record_and_field(tmp_path):
    rows = squad_rows()
    del rows[1]["question"]
    src = write_json(tmp_path / "s.json", rows)
    with pytest.raises(DataError, match=r"s.json, record 1, field 'question'"):
        convert(src, tmp_path / "o.json")
    rows = squad_rows()
    rows[0]["answers"] = ["the north station"]
    with pytest.raises(DataError, match=r"record 0, field 'answers'"):
        evalset(write_json(tmp_path / "s2.json", rows), tmp_path / "o.json")


def test_cli_convert_and_evalset(tmp_path, capsys):
    src = write_json(tmp_path / "squad.json", squad_rows())
    assert main(["data", "convert", "--from", "squad", "--to", "alpaca", "--template-lang", "zh",
                 str(src), str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "records in: 4, out: 3, rejected: 1" in out and "answer_start mismatches: 1" in out
    assert main(["data", "evalset", "--from", "squad", "--json", str(src), str(tmp_path / "e.jsonl")]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["records_out"] == 3 and len(read_jsonl(tmp_path / "e.jsonl")) == 3
    assert main(["data", "convert", "--template", r"Q: {question}\nC: {context}", str(src), str(tmp_path / "n.json")]) == 0
    assert json.loads((tmp_path / "n.json").read_text())[0]["instruction"].startswith("Q: Where is P-7?\nC: The pump")
