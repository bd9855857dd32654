import json

import pytest

from ragtune.cli import main
from ragtune.core.errors import ConfigError, DataError
from ragtune.data import ERROR_KINDS, validate, validate_path_or_raise

from .helpers import alpaca, write_json, write_jsonl

GOOD_MSG = {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}

# (record, kind, field) for every alpaca error kind; each record is placed after a valid one.
ALPACA_BAD = [
    ({"instruction": "q"}, "missing_field", "output"),
    ({"output": "a"}, "missing_field", "instruction"),
    ({"instruction": 3, "output": "a"}, "wrong_type", "instruction"),
    ({"instruction": "q", "output": "a", "system": ["s"]}, "wrong_type", "system"),
    ({"instruction": "q", "output": "  "}, "empty_output", "output"),
    ({"instruction": "q", "output": "a", "history": [["only one"]]}, "bad_history", "history[0]"),
    ({"instruction": "q", "output": "a", "history": [["h", "a"], ["h", 5]]}, "bad_history", "history[1]"),
    ({"instruction": "q", "output": "a", "history": "nope"}, "wrong_type", "history"),
    ({"instruction": " ", "input": "", "output": "a"}, "empty_input", "instruction"),
]

MESSAGES_BAD = [
    ({"messages": [{"role": "assistant", "content": "a"}]}, "role_order", "messages[0].role"),
    ({"messages": [{"role": "user", "content": "u"}, {"role": "user", "content": "u"},
                   {"role": "assistant", "content": "a"}]}, "role_order", "messages[1].role"),
    ({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"},
                   {"role": "system", "content": "late"}]}, "role_order", "messages[2].role"),
    ({"messages": [{"role": "user", "content": "u"}]}, "role_order", "messages[0].role"),
    ({"messages": [{"role": "user", "content": "u"}, {"role": "bot", "content": "a"}]}, "role_order", "messages[1].role"),
    ({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": ""}]}, "empty_output", "messages[1].content"),
    ({"messages": [{"role": "user", "content": "u"}, {"role": "assistant"}]}, "missing_field", "messages[1].content"),
    ({"messages": [{"role": "user", "content": 1}, {"role": "assistant", "content": "a"}]}, "wrong_type", "messages[0].content"),
    ({"messages": "hello"}, "wrong_type", "messages"),
    ({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "a"}]}, "empty_input", "messages[0].content"),
]


@pytest.mark.parametrize("rec,kind,field", ALPACA_BAD)
def test_alpaca_error_kinds_name_file_record_and_field(tmp_path, rec, kind, field):
    path = write_json(tmp_path / "train.json", [alpaca(0), rec])
    report = validate(path)
    assert not report.ok and report.valid == 1 and report.invalid_records == {1}
    issue = report.issues[0]
    assert (issue.kind, issue.record, issue.field) == (kind, 1, field)
    text = str(issue)
    assert "train.json" in text and "record 1" in text and f"'{field}'" in text


@pytest.mark.parametrize("rec,kind,field", MESSAGES_BAD)
def test_messages_error_kinds_name_line_and_field(tmp_path, rec, kind, field):
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD_MSG, rec])
    issue, = validate(path).issues
    assert (issue.kind, issue.record, issue.line, issue.field) == (kind, 1, 2, field)
    assert "train.jsonl: record 1 (line 2)" in str(issue) and field in str(issue)


def test_file_level_kinds_invalid_json_unknown_mixed_duplicate(tmp_path):
    rows = [alpaca(0), {"question": "q"}, alpaca(1), GOOD_MSG, alpaca(0), alpaca(2)]
    path = write_jsonl(tmp_path / "d.jsonl", rows, raw_lines={2: '{"instruction": '})
    report = validate(path)
    by_kind = {i.kind: i for i in report.issues}
    assert set(by_kind) == {"invalid_json", "unknown_format", "mixed_format", "duplicate"}
    assert by_kind["invalid_json"].line == 3
    assert by_kind["unknown_format"].line == 2
    assert by_kind["mixed_format"].line == 5 and "messages" in by_kind["mixed_format"].message
    assert by_kind["duplicate"].line == 6 and "record 0 (line 1)" in by_kind["duplicate"].message
    assert report.format == "alpaca" and report.total == 7 and report.valid == 3
    assert report.counts() == {"invalid_json": 1, "unknown_format": 1, "mixed_format": 1, "duplicate": 1}


def test_every_error_kind_is_covered_by_a_test():
    kinds = {k for _, k, _ in ALPACA_BAD + MESSAGES_BAD} | {"invalid_json", "unknown_format", "mixed_format", "duplicate"}
    assert kinds == set(ERROR_KINDS)


def test_duplicates_across_formats_of_the_same_conversation(tmp_path):
    # an alpaca record with input is the same conversation as instruction+"\n"+input
    path = write_json(tmp_path / "d.json", [alpaca(0, input="ctx"),
                                            {"instruction": "question 0?\nctx", "output": "answer 0."}])
    assert [i.kind for i in validate(path).issues] == ["duplicate"]


def test_over_long_counts_with_real_tokenizer(tmp_path, tiny_llm_dir):
    from transformers import AutoTokenizer

    from ragtune.core.prompt import PromptConfig, encode_prompt, render_turns

    tok = AutoTokenizer.from_pretrained(str(tiny_llm_dir))
    rows = [alpaca(0), alpaca(1, output="long " * 200), alpaca(2, input="ctx " * 300)]
    path = write_json(tmp_path / "d.json", rows)
    lengths = []
    for r in rows:
        from ragtune.data import to_messages

        text = "".join(t for t, _ in render_turns(tok, to_messages(r), PromptConfig()))
        lengths.append(len(encode_prompt(tok, text)))
    cutoff = sorted(lengths)[0] + 1
    report = validate(path, cutoff_len=cutoff, tokenizer=str(tiny_llm_dir))
    assert report.ok                               # over-long is a count, not an error
    assert report.over_long == 2 and report.max_tokens == max(lengths)
    assert report.mean_tokens == pytest.approx(sum(lengths) / 3)
    # a system prompt makes samples longer
    longer = validate(path, cutoff_len=cutoff, tokenizer=tok, prompt={"system": "word " * 50})
    assert longer.max_tokens > report.max_tokens
    with pytest.raises(ConfigError, match="tokenizer"):
        validate(path, cutoff_len=10)
    assert main(["data", "validate", str(path), "--cutoff-len", str(cutoff), "--tokenizer", str(tiny_llm_dir),
                 "--plot", str(tmp_path / "len.png")]) == 0
    assert (tmp_path / "len.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_validate_exit_codes_and_json(tmp_path, capsys):
    good = write_json(tmp_path / "good.json", [alpaca(0), alpaca(1)])
    bad = write_json(tmp_path / "bad.json", [alpaca(0), {"instruction": "q", "output": ""}])
    assert main(["data", "validate", str(good)]) == 0
    assert "2 valid, 0 invalid" in capsys.readouterr().out
    assert main(["data", "validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "bad.json: record 1, field 'output': output is empty [empty_output]" in out
    assert main(["data", "validate", "--json", str(bad)]) == 1
    payload = json.loads(capsys.readouterr().out)
    assert payload["invalid"] == 1 and payload["counts"] == {"empty_output": 1}
    with pytest.raises(DataError, match=r"record 1.*'output'"):
        validate_path_or_raise(bad)


def _squad_nested(n: int) -> dict:
    return {"version": "v1.0", "data": [{"title": f"t{i}", "paragraphs": [{
        "context": f"段落 {i} 的内容。", "qas": [{"id": f"q{i}", "question": f"问题 {i}?",
                                           "answers": [{"text": "内容", "answer_start": 5}]}]}]}
        for i in range(n)]}


@pytest.mark.parametrize("shape", ["nested", "flat"])
def test_cli_validate_squad_says_convert_once_and_collapses_identical_errors(tmp_path, capsys, shape):
    """Issue 19c: a SQuAD/CMRC file gets one line per distinct error (count + first records) and one
    suggestion of `ragtune data convert`, not one identical line per row."""
    path = tmp_path / "cmrc.json"
    if shape == "nested":
        path.write_text(json.dumps(_squad_nested(12), ensure_ascii=False), encoding="utf-8")
    else:
        write_json(path, [{"id": str(i), "context": "c", "question": f"q{i}",
                           "answers": {"text": ["c"], "answer_start": [0]}} for i in range(12)])
    assert main(["data", "validate", str(path)]) == 1
    out, err = capsys.readouterr()
    assert "looks like SQuAD/CMRC" in out
    assert out.count("ragtune data convert --from squad --to alpaca") == 1
    assert f"ragtune data convert --from squad --to alpaca {path} " in out
    unknown = [line for line in out.splitlines() if "[unknown_format]" in line]
    assert len(unknown) == 1, out
    assert "12 records (0, 1, 2, 3, 4, ...)" in unknown[0]
    assert "12 of 12 records" in err


def test_distinct_errors_stay_separate_lines_and_trainers_get_the_convert_hint(tmp_path):
    recs = [alpaca(0), {"instruction": "q", "output": ""}, {"instruction": "q2", "output": ""},
            {"instruction": 3, "output": "a"}]
    write_json(tmp_path / "mixed.json", recs)
    report = validate(tmp_path / "mixed.json")
    text = report.summary()
    assert report.foreign is None
    assert [line for line in text.splitlines() if "[empty_output]" in line] == [
        f"{tmp_path / 'mixed.json'}: 2 records (1, 2), field 'output': output is empty [empty_output]"]
    assert sum("[wrong_type]" in line for line in text.splitlines()) == 1
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps(_squad_nested(3)), encoding="utf-8")
    with pytest.raises(DataError) as exc:
        validate_path_or_raise(squad)
    assert "ragtune data convert" in str(exc.value)


def test_embedding_pairs_are_recognised_as_foreign(tmp_path):
    write_jsonl(tmp_path / "pairs.jsonl", [{"query": f"q{i}", "pos": ["p"], "neg": ["n"]} for i in range(3)])
    report = validate(tmp_path / "pairs.jsonl")
    assert report.foreign and "ragtune finetune embed" in report.foreign
    assert report.to_dict()["foreign"] == report.foreign
