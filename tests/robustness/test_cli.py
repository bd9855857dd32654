"""Bad input to the real CLI (``ragtune.cli.main``), command by command: each case asserts the exit
code, that the message names the file / record / field, that no traceback escapes, and that no
output (or temp file) is left half-written.

A case is (id, argv, expected exit code, words the error must contain, outputs that must not
exist). ``{w}`` in argv and words is the case's workspace (the files of ``_files``), ``{model}``
the tiny LLM. Typos in a `ragtune run` YAML are tests/run/test_run.py's TYPOS table (issue 13);
here only the file-level faults of a run config.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtune.cli import main

ALPACA = [{"instruction": "what is the pump pressure", "output": "4 bar"},
          {"instruction": "which valve", "output": "the north valve"}]
SQUAD = [{"id": "q1", "context": "The pump runs at 4 bar.", "question": "What pressure?",
          "answers": {"text": ["4 bar"], "answer_start": [16]}}]
EVAL = [{"question": "What pressure?", "context": "The pump runs at 4 bar.", "answers": ["4 bar"]}]


def _files(w: Path) -> None:
    """Every input a case may point at (cheap to write; each test gets its own copy)."""
    def js(name, obj):
        (w / name).write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")

    js("alpaca.json", ALPACA)
    js("squad.json", SQUAD)
    js("eval.json", EVAL)
    js("preds.json", ["4 bar"])
    js("preds2.json", ["4 bar", "x"])
    (w / "empty.json").write_text("")
    (w / "blank.jsonl").write_text("\n  \n")
    (w / "gbk.json").write_bytes(json.dumps(ALPACA, ensure_ascii=False).replace("pump", "泵").encode("gbk"))
    (w / "binary.json").write_bytes(bytes(range(256)) * 4)
    (w / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(ALPACA).encode())
    js("wrapped.json", {"data": ALPACA})
    js("object.json", {"instruction": "x", "output": "y"})
    js("number.json", 5)
    (w / "badline.jsonl").write_text(json.dumps(ALPACA[0]) + "\n{broken\n")
    js("history-str.json", [{**ALPACA[0], "history": "not a list"}])
    js("history-bad-pair.json", [{**ALPACA[0], "history": [["only one"]]}])
    js("roles.json", [{"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "q"}]}])
    js("dupes.json", [ALPACA[0], ALPACA[0]])
    js("ends-user.json", [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                                        {"role": "user", "content": "q2"}]}])
    js("system-int.json", [{**ALPACA[0], "system": 5}])
    js("empty-user.json", [{"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "a"}]}])
    js("list-records.json", [["a", "b"]])
    js("eval-noref.json", [{"question": "q", "context": "c"}])
    js("eval-badref.json", [{"question": "q", "context": "c", "answers": 5}])
    js("eval-question-int.json", [{"question": 3, "context": "c", "answers": ["a"]}])
    js("preds-int.json", [5])
    js("preds-obj.json", [{"answer": "x"}])
    js("squad-missing.json", [{"id": "q1", "context": "c", "answers": {"text": ["a"], "answer_start": [0]}}])
    js("pairs-bad.json", [{"query": "", "pos": ["p"]}])
    (w / "notes.txt").write_text("hello")
    (w / "dir.json").mkdir()
    (w / "a-file").write_text("x")
    (w / "run-list.yaml").write_text("- a\n- b\n")
    (w / "run-empty.yaml").write_text("")
    (w / "run-tab.yaml").write_text("run_dir: x\n\tdata: {}\n")
    (w / "run-gbk.yaml").write_bytes("run_dir: 运行\n".encode("gbk"))


def case(id_, argv, code, words, absent=()):
    return pytest.param(argv, code, words, absent, id=id_)


DATA = [
    case("validate-missing", "data validate {w}/nope.json", 1, ["{w}/nope.json", "does not exist"]),
    case("validate-dir", "data validate {w}/dir.json", 2, ["{w}/dir.json", "is a directory"]),
    case("validate-empty", "data validate {w}/empty.json", 1, ["empty.json", "no records"]),
    case("validate-blank-jsonl", "data validate {w}/blank.jsonl", 1, ["blank.jsonl", "no records"]),
    case("validate-gbk", "data validate {w}/gbk.json", 1, ["gbk.json", "not UTF-8", "line 1", "iconv"]),
    case("validate-binary", "data validate {w}/binary.json", 1, ["binary.json", "not UTF-8"]),
    case("validate-txt", "data validate {w}/notes.txt", 1, ["notes.txt", "unsupported file type '.txt'"]),
    case("validate-object", "data validate {w}/object.json", 1, ["object.json", "array of records"]),
    case("validate-number", "data validate {w}/number.json", 1, ["number.json", "array of records, got int"]),
    case("validate-bad-line", "data validate {w}/badline.jsonl", 1, ["badline.jsonl: record 1 (line 2)",
                                                                     "invalid_json"]),
    case("validate-history-str", "data validate {w}/history-str.json", 1, ["record 0", "field 'history'",
                                                                           "wrong_type"]),
    case("validate-history-pair", "data validate {w}/history-bad-pair.json", 1, ["field 'history[0]'",
                                                                                 "bad_history"]),
    case("validate-roles", "data validate {w}/roles.json", 1, ["record 0", "messages[0].role", "role_order"]),
    case("validate-duplicates", "data validate {w}/dupes.json", 1, ["record 1", "duplicate of record 0"]),
    case("validate-list-records", "data validate {w}/list-records.json", 1, ["record 0", "unknown_format"]),
    case("validate-cutoff-no-tokenizer", "data validate {w}/alpaca.json --cutoff-len 8", 1, ["--tokenizer"]),
    case("validate-bad-tokenizer", "data validate {w}/alpaca.json --cutoff-len 8 --tokenizer {w}/no-model", 1,
         ["{w}/no-model"]),
    case("convert-missing", "data convert --from alpaca --to messages {w}/nope.json {w}/out.json", 1,
         ["{w}/nope.json", "does not exist"], ["out.json"]),
    case("convert-gbk", "data convert --from alpaca --to messages {w}/gbk.json {w}/out.json", 1,
         ["gbk.json", "not UTF-8"], ["out.json"]),
    case("convert-history-str", "data convert --from alpaca --to messages {w}/history-str.json {w}/out.json", 1,
         ["history-str.json", "record 0", "history"], ["out.json"]),
    case("convert-wrong-format", "data convert --from squad {w}/alpaca.json {w}/out.json", 1,
         ["alpaca.json", "record 0"], ["out.json"]),
    case("convert-out-is-dir", "data convert --from alpaca --to messages {w}/alpaca.json {w}/dir.json", 2,
         ["{w}/dir.json", "is a directory"]),
    case("convert-out-unwritable", "data convert --from alpaca --to messages {w}/alpaca.json /proc/ragtune/o.json",
         1, ["/proc/ragtune/o.json"]),
    case("convert-template-no-field", "data convert --from squad --template 'Q: {question}' {w}/squad.json {w}/out.json",
         1, ["{context}"], ["out.json"]),
    case("convert-template-unknown-field",
         "data convert --from squad --template '{context} {question} {colour}' {w}/squad.json {w}/out.json", 1,
         ["colour"], ["out.json"]),
    case("evalset-missing-question", "data evalset {w}/squad-missing.json {w}/out.json", 1,
         ["squad-missing.json", "record 0", "question"], ["out.json"]),
    case("embed-pairs-neg-num", "data embed-pairs {w}/squad.json {w}/ep --neg-num -1", 1,
         ["neg_num", "greater than or equal to 0"], ["ep"]),
    case("embed-pairs-columns", "data embed-pairs {w}/alpaca.json {w}/ep", 1,
         ["alpaca.json", "record 0", "field 'question'", "--query-col"], ["ep"]),
    case("mine-neg-num", "data mine-negatives {w}/pairs-bad.json {w}/m.jsonl --model {w}/no-model --neg-num -2", 1,
         ["neg_num"], ["m.jsonl"]),
    case("mine-bad-query", "data mine-negatives {w}/pairs-bad.json {w}/m.jsonl --model {w}/no-model", 1,
         ["pairs-bad.json", "record 0", "field 'query'"], ["m.jsonl"]),
    case("augment-fraction", "data augment-json {w}/alpaca.json {w}/aug.json --fraction 2", 1, ["fraction"],
         ["aug.json"]),
    case("evalset-from-dir", "data evalset {w}/dir.json {w}/out.json", 2, ["dir.json", "is a directory"],
         ["out.json"]),
]

FINETUNE = [
    case("ft-train-missing", "finetune llm --base {model} --train {w}/nope.json --output {w}/o", 1,
         ["{w}/nope.json"], ["o"]),
    case("ft-train-dir", "finetune llm --base {model} --train {w}/dir.json --output {w}/o", 1,
         ["dir.json", "directory"], ["o"]),
    case("ft-train-empty", "finetune llm --base {model} --train {w}/empty.json --output {w}/o", 1,
         ["empty.json", "no records"], ["o"]),
    case("ft-train-gbk", "finetune llm --base {model} --train {w}/gbk.json --output {w}/o", 1,
         ["gbk.json", "not UTF-8"], ["o"]),
    case("ft-train-history-str", "finetune llm --base {model} --train {w}/history-str.json --output {w}/o", 1,
         ["history-str.json", "record 0", "field 'history'"], ["o"]),
    case("ft-train-roles", "finetune llm --base {model} --train {w}/roles.json --output {w}/o", 1,
         ["roles.json", "record 0", "messages[0].role"], ["o"]),
    case("ft-train-dupes", "finetune llm --base {model} --train {w}/dupes.json --output {w}/o", 1,
         ["dupes.json", "record 1", "duplicate"], ["o"]),
    case("ft-train-ends-with-user", "finetune llm --base {model} --train {w}/ends-user.json --output {w}/o", 1,
         ["ends-user.json", "record 0", "messages[2].role", "end with an assistant"], ["o"]),
    case("ft-train-system-int", "finetune llm --base {model} --train {w}/system-int.json --output {w}/o", 1,
         ["system-int.json", "record 0", "field 'system'", "must be a string"], ["o"]),
    case("ft-train-empty-user", "finetune llm --base {model} --train {w}/empty-user.json --output {w}/o", 1,
         ["empty-user.json", "record 0", "messages[0].content", "empty"], ["o"]),
    case("ft-base-missing", "finetune llm --base {w}/no-model --train {w}/alpaca.json --output {w}/o", 1,
         ["{w}/no-model"], ["o"]),
    case("ft-output-is-file", "finetune llm --base {model} --train {w}/alpaca.json --output {w}/a-file", 1,
         ["a-file", "is a file"]),
    case("ft-lr-negative", "finetune llm --base {model} --train {w}/alpaca.json --output {w}/o --learning-rate -1",
         1, ["learning_rate"], ["o"]),
    case("ft-cutoff-zero", "finetune llm --base {model} --train {w}/alpaca.json --output {w}/o --cutoff-len 0", 1,
         ["cutoff_len"], ["o"]),
    case("ft-val-size", "finetune llm --base {model} --train {w}/alpaca.json --output {w}/o --val-size 1.5", 1,
         ["val_size", "whole number"], ["o"]),
    case("ft-lora-target", "finetune llm --base {model} --train {w}/alpaca.json --output {w}/o --lora-target nope_proj",
         1, ["nope_proj"], ["o"]),
    case("ft-resume-value", "finetune llm --base {model} --train {w}/alpaca.json --output {w}/o --resume maybe", 1,
         ["resume"], ["o"]),
    case("ft-config-missing", "finetune llm --config {w}/nope.yaml", 1, ["nope.yaml", "does not exist"]),
    case("ft-config-list", "finetune llm --config {w}/run-list.yaml", 1, ["run-list.yaml"]),
    case("ft-config-tab", "finetune llm --config {w}/run-tab.yaml", 1, ["run-tab.yaml", "line"]),
]

INFER = [
    case("infer-no-model", "infer --evalset {w}/eval.json --output {w}/p.json", 1, ["--model", "--url"], ["p.json"]),
    case("infer-evalset-missing", "infer --model {model} --evalset {w}/nope.json --output {w}/p.json", 1,
         ["{w}/nope.json"], ["p.json"]),
    case("infer-evalset-dir", "infer --model {model} --evalset {w}/dir.json --output {w}/p.json", 1,
         ["dir.json", "directory"], ["p.json"]),
    case("infer-evalset-empty", "infer --model {model} --evalset {w}/empty.json --output {w}/p.json", 1,
         ["empty.json", "eval set is empty"], ["p.json"]),
    case("infer-evalset-gbk", "infer --model {model} --evalset {w}/gbk.json --output {w}/p.json", 1,
         ["gbk.json", "not UTF-8"], ["p.json"]),
    case("infer-evalset-list-records", "infer --model {model} --evalset {w}/list-records.json --output {w}/p.json",
         1, ["list-records.json", "record 0"], ["p.json"]),
    case("infer-item-question-int", "infer --model {model} --evalset {w}/eval-question-int.json --output {w}/p.json",
         1, ["eval-question-int.json", "record 0", "question"], ["p.json"]),
    case("infer-template-field", "infer --model {model} --evalset {w}/eval.json --output {w}/p.json --template '{{colour}}'",
         1, ["eval.json", "record 0", "colour"], ["p.json"]),
    case("infer-max-tokens-zero", "infer --model {model} --evalset {w}/eval.json --output {w}/p.json --max-tokens 0",
         1, ["max_tokens"], ["p.json"]),
    case("infer-output-dir", "infer --model {model} --evalset {w}/eval.json --output {w}/dir.json", 1,
         ["dir.json", "directory"]),
    case("infer-url-unreachable",
         "infer --url http://127.0.0.1:9/v1 --evalset {w}/eval.json --output {w}/p.json --retries 0 --timeout 2", 1,
         ["127.0.0.1:9"], ["p.json"]),
    case("infer-url-not-http", "infer --url ftp://x/v1 --evalset {w}/eval.json --output {w}/p.json", 1,
         ["url", "not an http(s) URL"], ["p.json"]),
]

EVAL_CASES = [
    case("eval-evalset-missing", "eval llm --evalset {w}/nope.json --predictions {w}/preds.json --output {w}/e "
         "--metrics exact", 1, ["{w}/nope.json"], ["e"]),
    case("eval-predictions-count", "eval llm --evalset {w}/eval.json --predictions {w}/preds2.json --output {w}/e "
         "--metrics exact", 1, ["preds2.json", "2 predictions for an eval set of 1"], ["e"]),
    case("eval-predictions-gbk", "eval llm --evalset {w}/eval.json --predictions {w}/gbk.json --output {w}/e "
         "--metrics exact", 1, ["gbk.json", "not UTF-8"], ["e"]),
    case("eval-predictions-empty", "eval llm --evalset {w}/eval.json --predictions {w}/empty.json --output {w}/e "
         "--metrics exact", 1, ["empty.json", "predictions file is empty"], ["e"]),
    case("eval-prediction-int", "eval llm --evalset {w}/eval.json --predictions {w}/preds-int.json --output {w}/e "
         "--metrics exact", 1, ["preds-int.json", "record 0", "prediction"], ["e"]),
    case("eval-prediction-field", "eval llm --evalset {w}/eval.json --predictions {w}/preds-obj.json --output {w}/e "
         "--metrics exact", 1, ["preds-obj.json", "record 0", "prediction"], ["e"]),
    case("eval-no-reference", "eval llm --evalset {w}/eval-noref.json --predictions {w}/preds.json --output {w}/e "
         "--metrics exact", 1, ["eval-noref.json", "record 0", "answers"], ["e"]),
    case("eval-bad-reference", "eval llm --evalset {w}/eval-badref.json --predictions {w}/preds.json --output {w}/e "
         "--metrics exact", 1, ["eval-badref.json", "record 0", "answers"], ["e"]),
    case("eval-question-int", "eval llm --evalset {w}/eval-question-int.json --predictions {w}/preds.json "
         "--output {w}/e --metrics exact", 1, ["eval-question-int.json", "record 0", "question"], ["e"]),
    case("eval-unknown-metric", "eval llm --evalset {w}/eval.json --predictions {w}/preds.json --output {w}/e "
         "--metrics exakt", 1, ["exakt", "exact"], ["e"]),
    case("eval-embed-missing", "eval llm --evalset {w}/eval.json --predictions {w}/preds.json --output {w}/e "
         "--metrics cosine --embed {w}/no-embedder", 1, ["{w}/no-embedder"], ["e"]),
    case("eval-output-is-file", "eval llm --evalset {w}/eval.json --predictions {w}/preds.json --output {w}/a-file "
         "--metrics exact", 1, ["a-file", "is a file"]),
    case("eval-run-dir-is-file", "eval llm --evalset {w}/eval.json --predictions {w}/preds.json --run-dir {w}/a-file "
         "--metrics exact", 1, ["a-file", "is a file"]),
    case("eval-judge-url-not-http", "eval llm --evalset {w}/eval.json --predictions {w}/preds.json --output {w}/e "
         "--metrics faithfulness --judge-base-url 127.0.0.1:8000/v1", 1,
         ["judge_base_url", "not an http(s) URL"], ["e"]),
    case("compare-missing-run", "eval compare {w}/no-run-a {w}/no-run-b --output {w}/cmp", 2,
         ["no-run-a", "does not exist"], ["cmp"]),
]

RUN = [
    case("run-missing", "run {w}/nope.yaml", 2, ["nope.yaml"]),
    case("run-empty", "run {w}/run-empty.yaml", 1, ["run-empty.yaml"]),
    case("run-list", "run {w}/run-list.yaml", 1, ["run-list.yaml", "mapping"]),
    case("run-tab", "run {w}/run-tab.yaml", 1, ["run-tab.yaml", "line"]),
    case("run-gbk", "run {w}/run-gbk.yaml", 1, ["run-gbk.yaml", "UTF-8"]),
    case("run-dir-as-config", "run {w}/dir.json", 2, ["dir.json"]),
]

SERVE = [
    case("serve-port", "serve --model {model} --port 70000", 1, ["port", "65535"]),
    case("serve-model-missing", "serve --model {w}/no-model --port 0", 1, ["{w}/no-model"]),
    case("serve-engine", "serve --model {model} --engine vlm", 1, ["vlm", "vllm"]),
    case("serve-limit", "serve --model {model} --max-request-bytes 10", 1, ["max_request_bytes"]),
    case("serve-adapter-missing", "serve --model {model} --adapter {w}/no-adapter --port 0", 1, ["{w}/no-adapter"]),
]


@pytest.fixture
def w(tmp_path):
    _files(tmp_path)
    return tmp_path


def _run(argv: str, w: Path, model: Path, capsys) -> tuple[int, str]:
    import shlex

    args = [a.replace("{w}", str(w)).replace("{model}", str(model)) for a in shlex.split(argv)]
    args = [a.replace("{{", "{").replace("}}", "}") for a in args]
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err + captured.out


@pytest.mark.parametrize("argv, code, words, absent", DATA + FINETUNE + INFER + EVAL_CASES + RUN + SERVE)
def test_bad_input(w, tiny_llm_dir, capsys, argv, code, words, absent):
    got, out = _run(argv, w, tiny_llm_dir, capsys)
    assert got == code, out[-3000:]
    for word in words:
        assert word.replace("{w}", str(w)) in out, f"{word!r} not in:\n{out[-3000:]}"
    assert "Traceback" not in out
    for name in absent:
        assert not (w / name).exists(), f"{name} was written"
    assert not [p.name for p in w.iterdir() if p.name.startswith(".") and ".tmp" in p.name]


def test_good_variants_are_accepted(w, capsys):
    """The other side of the same readers: a BOM, {"data": [...]} and JSONL validate, and what
    validate accepts, the trainer's loader accepts too (one reader, one validator)."""
    from ragtune.data.validate import load_conversations

    for name in ("bom.json", "wrapped.json", "alpaca.json"):
        assert main(["data", "validate", str(w / name)]) == 0, capsys.readouterr().err
        assert len(load_conversations(w / name)) == 2
    (w / "a.jsonl").write_text("\n".join(json.dumps(r) for r in ALPACA) + "\n")
    assert main(["data", "validate", str(w / "a.jsonl")]) == 0


def test_every_reader_takes_the_same_variants(w):
    """Eval sets, predictions, inference inputs and embedding sets: BOM, {"data": [...]}, JSONL in
    .json, CSV; and the same errors for a directory or a non-UTF-8 file."""
    import csv

    from ragtune.core.errors import DataError
    from ragtune.data.embed_sets import load_eval
    from ragtune.eval.data import load_evalset, load_predictions
    from ragtune.infer.runner import load_evalset as infer_items

    (w / "e-bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(EVAL).encode())
    (w / "e-wrapped.json").write_text(json.dumps({"data": EVAL}))
    (w / "e-lines.json").write_text("\n".join(json.dumps(r) for r in EVAL * 2))
    with open(w / "e.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["question", "context", "answers"])
        writer.writeheader()
        writer.writerow({"question": "What pressure?", "context": "The pump runs at 4 bar.", "answers": '["4 bar"]'})
    for name in ("e-bom.json", "e-wrapped.json", "e-lines.json", "e.csv"):
        assert load_evalset(w / name)[0].reference == "4 bar", name
        assert infer_items(w / name)[0]["question"] == "What pressure?", name
    (w / "p-bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(["4 bar"]).encode())
    assert load_predictions(w / "p-bom.json") == ["4 bar"]
    (w / "r.json").write_text(json.dumps({"data": [{"query": "q", "corpus": ["p"]}]}))
    assert load_eval(w / "r.json")[0].corpus == ["p"]
    for reader in (load_evalset, infer_items, load_predictions, load_eval):
        for bad, words in (("dir.json", "directory"), ("gbk.json", "not UTF-8")):
            with pytest.raises(DataError, match=words) as exc:
                reader(w / bad)
            assert bad in str(exc.value)
