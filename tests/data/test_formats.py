import json

import pytest

from ragtune.core.errors import DataError
from ragtune.data import (
    alpaca_to_messages,
    convert,
    detect_format,
    messages_to_alpaca,
    normalize_alpaca,
    read_records,
    to_messages,
)

from .helpers import alpaca, write_json, write_jsonl

ALPACA_CASES = [
    {"instruction": "Translate", "input": "Hello, how are you?", "output": "Bonjour"},
    {"instruction": "Say hi", "output": "hi", "system": "Be formal.",
     "history": [["What is AI?", "Technology."], ["Uses?", "Many."]]},
    {"instruction": "", "input": "only input", "output": "x", "system": "", "history": []},
    {"instruction": "q", "input": "", "output": "a", "meta": {"source": "kept"}},
    {"instruction": "line1\nline2", "input": "in\nput", "output": "multi\nline", "system": "s"},
]


@pytest.mark.parametrize("rec", ALPACA_CASES)
def test_alpaca_messages_alpaca_is_lossless(rec):
    assert messages_to_alpaca(alpaca_to_messages(rec)) == normalize_alpaca(rec)


def test_alpaca_to_messages_layout():
    msgs = alpaca_to_messages(ALPACA_CASES[1])["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert msgs[0]["content"] == "Be formal." and msgs[1]["content"] == "What is AI?"
    assert msgs[-2:] == [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]
    # input joins the instruction the way the model will see it
    assert to_messages(ALPACA_CASES[0])[0]["content"] == "Translate\nHello, how are you?"


MESSAGE_CASES = [
    {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]},
    {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "u1"},
                  {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"},
                  {"role": "assistant", "content": "a2"}], "id": 7},
]


@pytest.mark.parametrize("rec", MESSAGE_CASES)
def test_messages_alpaca_messages_is_lossless(rec):
    assert alpaca_to_messages(messages_to_alpaca(rec)) == rec


def test_file_round_trip_through_cli_convert(tmp_path):
    src = write_json(tmp_path / "a.json", ALPACA_CASES)
    assert convert(src, tmp_path / "m.jsonl", source="auto", to="messages").records_out == len(ALPACA_CASES)
    assert convert(tmp_path / "m.jsonl", tmp_path / "back.json", source="messages", to="alpaca").records_out == 5
    back = json.loads((tmp_path / "back.json").read_text())
    assert back == [normalize_alpaca(r) for r in ALPACA_CASES]


def test_reformat_refuses_invalid_records(tmp_path):
    src = write_json(tmp_path / "a.json", [alpaca(0), {"instruction": "x", "output": ""}])
    with pytest.raises(DataError, match=r"record 1.*'output'"):
        convert(src, tmp_path / "out.json", source="alpaca", to="messages")
    assert not (tmp_path / "out.json").exists()


def test_detection_looks_at_every_record(tmp_path):
    items = [alpaca(i) for i in range(5)] + [MESSAGE_CASES[0]] + [alpaca(9)]
    path = write_json(tmp_path / "mixed.json", items)
    with pytest.raises(DataError) as err:
        detect_format(read_records(path), str(path))
    assert "mixed formats" in str(err.value) and "record 5" in str(err.value) and "mixed.json" in str(err.value)
    assert detect_format([alpaca(0), alpaca(1)]) == "alpaca"
    assert detect_format(MESSAGE_CASES) == "messages"
    with pytest.raises(DataError, match="record 1"):
        detect_format([alpaca(0), {"question": "q"}])


def test_readers_all_formats_agree(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    items = [alpaca(0, history=[["h", "a"]]), alpaca(1, input="007")]
    write_json(tmp_path / "d.json", items)
    write_jsonl(tmp_path / "d.jsonl", items)
    (tmp_path / "d.csv").write_text(
        'instruction,input,output,history\n'
        '"question 0?",,"answer 0.","[[""h"", ""a""]]"\n'
        '"question 1?",007,"answer 1.",\n', encoding="utf-8")
    pq.write_table(pa.Table.from_pylist([dict(i, history=i.get("history", [])) for i in items]), tmp_path / "d.parquet")
    got = {ext: [r.data for r in read_records(tmp_path / f"d.{ext}")] for ext in ("json", "jsonl", "csv", "parquet")}
    for ext, rows in got.items():
        assert [normalize_alpaca(r) for r in rows] == [normalize_alpaca(i) for i in items], ext
    assert got["csv"][1]["input"] == "007"     # text stays text


def test_jsonl_line_numbers_and_bad_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [alpaca(0), alpaca(1)], raw_lines={1: "{not json"})
    with pytest.raises(DataError, match=r"d.jsonl.*line 2 is not valid JSON"):
        read_records(path)
    recs = read_records(path, keep_bad_lines=True)
    assert [r.line for r in recs] == [1, 2, 3]


def test_json_lines_saved_as_json_and_json_errors(tmp_path):
    # what datasets' to_json writes (the chapter names such files train.json)
    lines = tmp_path / "lines.json"
    lines.write_text('{"instruction": "a", "output": "b"}\n\n{"instruction": "c", "output": "d"}\n')
    recs = read_records(lines)
    assert [(r.index, r.line, r.data["instruction"]) for r in recs] == [(0, 1, "a"), (1, 3, "c")]
    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": "a"},\n {"instruction": }]')
    with pytest.raises(DataError, match=r"bad.json: not valid JSON at line 2"):
        read_records(bad)
    with pytest.raises(DataError, match="unsupported file type"):
        read_records(tmp_path / "x.txt")
