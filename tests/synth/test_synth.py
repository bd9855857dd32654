"""`ragtune data synth` against a real teacher over HTTP on 127.0.0.1 (tests/synth/teacher_server.py)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ragtune.synth import filters as F
from ragtune.synth import synthesize

from .helpers import BAD, GOOD, write_kb
from .teacher_server import running_teacher

HERE = Path(__file__).parent


@pytest.fixture()
def teacher():
    with running_teacher() as t:
        yield t


def _run(kb, out, teacher, embed, **kw):
    # neg_margin -1: a random tiny embedder scores everything alike, so no margin guard here
    opts = {"docs": str(kb), "output": str(out), "teacher": teacher.base_url, "embed": str(embed), "retries": 1,
            "min_chunk_chars": 10, "neg_num": 2, "eval_fraction": 0.3, "neg_margin": -1.0}
    return synthesize(**{**opts, **kw})


def _read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def test_synth_writes_all_four_outputs_and_counts_every_rejection(tmp_path, teacher, tiny_embedder_dir):
    kb = write_kb(tmp_path / "kb")
    out = tmp_path / "out"
    s = _run(kb, out, teacher, tiny_embedder_dir)
    # one chunk per document here; each bad document triggers exactly one filter
    assert s.rejected == {F.UNPARSEABLE: 1, F.CONTAINS_ANSWER: 1, F.NOT_IN_CHUNK: 1, F.DUPLICATE: 1}
    assert s.notes["chunks without an answer (teacher errors; re-run to ask again)"] == 1
    assert s.notes["chunks parsed after a re-ask"] == 1            # FLAKY: JSON only when re-asked
    garbage_asks = [r for r in teacher.requests if "GARBAGE" in r["messages"][0]["content"]]
    assert len(garbage_asks) == 3                                  # 1 + parse_retries (2)
    assert all(r["temperature"] >= 0.7 for r in garbage_asks[1:])
    sft = json.loads((out / "sft.json").read_text())
    pairs = _read_jsonl(out / "embed_train.jsonl")
    evalset = json.loads((out / "eval.json").read_text())
    kb_lines = (out / "kb" / "chunks.txt").read_text().strip().split("\n")
    assert len(kb_lines) == len(GOOD) + len(BAD)                     # the KB holds every chunk
    assert len(sft) == len(pairs) > 0 and len(evalset) > 0
    assert s.records_out == len(sft) + len(evalset)
    for row, pair in zip(sft, pairs):
        paragraph = row["instruction"].split("### Known paragraph: ")[-1].split("\n\n### Question")[0] \
            if "Known paragraph" in row["instruction"] else row["instruction"].split("已知段落：")[1].split("\n\n### 问题")[0]
        assert row["output"] in paragraph and paragraph == pair["pos"][0] and paragraph in kb_lines
        assert row["output"].lower() not in pair["query"].lower()
        assert pair["pos"][0] not in pair["neg"] and len(pair["neg"]) == 2 and set(pair["neg"]) <= set(kb_lines)
    # document-disjoint split
    train_docs = {r["doc"] for r in sft}
    eval_docs = {e["doc"] for e in evalset}
    assert train_docs.isdisjoint(eval_docs) and s.notes["eval documents"] == 4
    for e in evalset:
        assert e["answers"] in e["context"] and e["context"] in kb_lines
    retrieval = _read_jsonl(out / "eval_retrieval.jsonl")
    assert [r["query"] for r in retrieval] == [e["question"] for e in evalset]
    # the Chinese document got the Chinese prompt, Chinese questions and the Chinese template
    zh = [r for r in teacher.requests if "甲泵" in r["messages"][0]["content"]]
    assert zh and "原文照抄" in zh[0]["messages"][0]["content"]
    zh_rows = [r for r in sft if r["doc"] == "zh/泵.txt"] + [e for e in evalset if e["doc"] == "zh/泵.txt"]
    assert zh_rows
    for r in zh_rows:
        assert ("请用下面段落的原文回答问题" in r["instruction"]) if "instruction" in r else r["lang"] == "zh"
    assert json.loads((out / "summary.json").read_text())["rejected"] == s.rejected


def test_teacher_errors_are_counted_and_asked_again_on_the_next_run(tmp_path, teacher, tiny_embedder_dir):
    kb = write_kb(tmp_path / "kb", {**GOOD, "bad/broken.md": BAD["bad/broken.md"]})
    first = _run(kb, tmp_path / "out", teacher, tiny_embedder_dir)
    assert first.notes["chunks without an answer (teacher errors; re-run to ask again)"] == 1
    broken_asks = sum("BROKEN" in r["messages"][0]["content"] for r in teacher.requests)
    assert broken_asks == 2                                            # the client's retry (retries=1)
    teacher.heal, n_before = True, len(teacher.requests)
    second = _run(kb, tmp_path / "out", teacher, tiny_embedder_dir)
    assert len(teacher.requests) - n_before == 1                       # only the failed chunk again
    assert second.notes["chunks without an answer (teacher errors; re-run to ask again)"] == 0
    assert second.records_out == first.records_out + 1


def test_a_killed_run_resumes_without_duplicates(tmp_path, tiny_embedder_dir):
    kb = write_kb(tmp_path / "kb", GOOD)
    port_file = tmp_path / "port"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1] / "src"), str(HERE.parent)])}
    script = f"from synth.teacher_server import serve_forever; serve_forever({str(port_file)!r}, 0.4)"
    server = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.time() + 30
        while not port_file.exists() or not port_file.read_text():
            assert time.time() < deadline, "teacher process did not start"
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text()}/v1"
        out = tmp_path / "out"
        code = (f"from ragtune.synth import synthesize; synthesize(docs={str(kb)!r}, output={str(out)!r}, "
                f"teacher={url!r}, embed={str(tiny_embedder_dir)!r}, min_chunk_chars=10, neg_num=1, "
                f"eval_fraction=0.3, concurrency=1)")
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        journal = out / ".synth" / "journal.jsonl"
        deadline = time.time() + 300
        while not journal.exists() or len(journal.read_text().splitlines()) < 3:   # meta + 2 chunks
            assert time.time() < deadline and proc.poll() is None, "synth did not get going"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        server.kill()
        server.wait()
    answered = [json.loads(x)["key"] for x in journal.read_text().splitlines()[1:] if x.strip()]
    assert 2 <= len(answered) < len(GOOD) and not (out / "sft.json").exists()
    with running_teacher() as teacher:        # the teacher restarted (new port, same model)
        s = _same_settings(kb, out, teacher, tiny_embedder_dir)
        assert len(teacher.requests) == len(GOOD) - len(answered)   # only the chunks without an answer
    keys = [json.loads(x)["key"] for x in journal.read_text().splitlines()[1:]]
    assert len(keys) == len(set(keys)) == len(GOOD)
    with running_teacher() as fresh:
        ref = _same_settings(kb, tmp_path / "ref", fresh, tiny_embedder_dir)
    assert json.loads((out / "sft.json").read_text()) == json.loads((tmp_path / "ref" / "sft.json").read_text())
    assert s.records_out == ref.records_out


def _same_settings(kb, out, teacher, embed):
    return synthesize(docs=str(kb), output=str(out), teacher=teacher.base_url, embed=str(embed), min_chunk_chars=10,
                      neg_num=1, eval_fraction=0.3, concurrency=1)
