"""Review, the round-trip filter, early errors, `ragtune data label` and the CLI, against a real HTTP teacher."""
import json

import pytest

from ragtune.cli import main
from ragtune.core.errors import BackendError, ConfigError, DataError
from ragtune.synth import filters as F
from ragtune.synth import label, synthesize

from .helpers import GOOD, write_kb
from .teacher_server import running_teacher


@pytest.fixture()
def teacher():
    with running_teacher() as t:
        yield t


def _opts(kb, out, teacher, embed, **kw):
    return {"docs": str(kb), "output": str(out), "teacher": teacher.base_url, "embed": str(embed),
            "min_chunk_chars": 10, "neg_num": 1, "neg_margin": -1.0, "eval_fraction": 0.3, **kw}


def test_review_file_decides_and_edits_are_filtered_again(tmp_path, teacher, tiny_embedder_dir):
    kb = write_kb(tmp_path / "kb", GOOD)
    out = tmp_path / "out"
    s = synthesize(**_opts(kb, out, teacher, tiny_embedder_dir, review=True))
    rows = [json.loads(x) for x in (out / "review.jsonl").read_text().splitlines()]
    assert len(rows) == s.records_out > 3 and all(r["accept"] is True for r in rows)
    assert not (out / "sft.json").exists()                 # review first, training sets after
    asked = len(teacher.requests)
    rows[0]["accept"] = False
    rows[1]["answer"] = "an answer the reviewer made up"   # not a span any more: filtered again
    rows[2]["answer"] = rows[2]["answer"][:-1] if len(rows[2]["answer"]) > 1 else rows[2]["answer"]
    (out / "review.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows[:-1]) + "\n")
    s2 = synthesize(**_opts(kb, out, teacher, tiny_embedder_dir, apply_review=True))
    assert len(teacher.requests) == asked                  # the journal answered everything
    assert s2.rejected[F.REVIEW] == 2                      # accept=false + the deleted last line
    assert s2.rejected[F.NOT_IN_CHUNK + " (after review edit)"] == 1
    sft = json.loads((out / "sft.json").read_text())
    evalset = json.loads((out / "eval.json").read_text())
    assert len(sft) + len(evalset) == len(rows) - 3
    kept = {r["id"] for r in sft} | {e["id"] for e in evalset}
    assert rows[0]["id"] not in kept and rows[-1]["id"] not in kept and rows[2]["id"] in kept
    bad = dict(rows[3], accept="yes")
    (out / "review.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(DataError, match="record 0.*'accept'"):
        synthesize(**_opts(kb, out, teacher, tiny_embedder_dir, apply_review=True))


def test_round_trip_keeps_only_questions_whose_chunk_is_retrieved(tmp_path, teacher, tiny_embedder_dir):
    import numpy as np

    from ragtune.data.embed_pairs import DEFAULT_INSTRUCTION
    from ragtune.data.mining import encode, load_embedder

    kb = write_kb(tmp_path / "kb", GOOD)
    base = synthesize(**_opts(kb, tmp_path / "a", teacher, tiny_embedder_dir))
    rt = synthesize(**_opts(kb, tmp_path / "b", teacher, tiny_embedder_dir, roundtrip_k=1))
    dropped = rt.rejected.get(F.ROUND_TRIP, 0)
    assert dropped > 0 and rt.records_out == base.records_out - dropped
    model = load_embedder(str(tiny_embedder_dir))
    chunks = (tmp_path / "b" / "kb" / "chunks.txt").read_text().strip().split("\n")
    vecs = encode(model, chunks, 8)
    for e in json.loads((tmp_path / "b" / "eval.json").read_text()):
        q = encode(model, [DEFAULT_INSTRUCTION + e["question"]], 8)[0]
        assert chunks[int(np.argmax(vecs @ q))] == e["context"]


def test_bad_settings_fail_before_any_teacher_call(tmp_path, teacher, tiny_embedder_dir):
    kb = write_kb(tmp_path / "kb", GOOD)
    with pytest.raises(BackendError, match="not usable"):
        synthesize(**{**_opts(kb, tmp_path / "o", teacher, tiny_embedder_dir), "teacher": "http://127.0.0.1:9/v1",
                      "retries": 0})
    prompt = tmp_path / "p.txt"
    prompt.write_text("Questions about {chunk} please")
    with pytest.raises(ConfigError, match=r"lacks the placeholder\(s\) \{n\}"):
        synthesize(**_opts(kb, tmp_path / "o", teacher, tiny_embedder_dir, prompt_file=str(prompt)))
    one = write_kb(tmp_path / "one", {"a.md": GOOD["pumps/alpha.md"]})
    with pytest.raises(DataError, match="at least 2"):
        synthesize(**_opts(one, tmp_path / "o2", teacher, tiny_embedder_dir))
    with pytest.raises(ConfigError, match="unknown key 'questions_per_chnk'.*did you mean 'questions_per_chunk'"):
        synthesize(**_opts(kb, tmp_path / "o", teacher, tiny_embedder_dir, questions_per_chnk=2))
    assert teacher.requests == []
    # a changed setting refuses to mix with an earlier journal
    synthesize(**_opts(kb, tmp_path / "o3", teacher, tiny_embedder_dir))
    with pytest.raises(ConfigError, match="changed: questions_per_chunk"):
        synthesize(**_opts(kb, tmp_path / "o3", teacher, tiny_embedder_dir, questions_per_chunk=5))


def test_label_answers_validates_and_keeps_teacher_token_distribution(tmp_path, teacher, tiny_llm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llm_dir)
    teacher.tokenizer = tok
    ctx = "The code of pump Alpha is K-101. The pressure of pump Alpha is 7 bar."
    rows = [{"question": "What is the code of pump Alpha?", "context": ctx},
            {"question": "What is the pressure of pump Alpha?", "context": [ctx, "Unrelated passage."]},
            {"question": "Who built pump Alpha?", "context": ctx}]          # teacher: "I do not know."
    src = tmp_path / "questions.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "labelled.json"
    s = label(input=str(src), output=str(out), teacher=teacher.base_url, logprobs=3)
    assert s.records_out == 2 and s.rejected == {F.NOT_IN_CHUNK: 1}
    recs = json.loads(out.read_text())
    assert [r["output"] for r in recs] == ["K-101", "7 bar"]
    for r in recs:
        assert r["teacher"]["token_ids"] == tok(r["output"], add_special_tokens=False)["input_ids"]
        assert all(len(top) == 3 for top in r["teacher"]["top_logprobs"])
    asks = teacher.requests
    assert all(b["logprobs"] is True and b["top_logprobs"] == 3 and b["return_tokens_as_token_ids"] for b in asks)
    label(input=str(src), output=str(out), teacher=teacher.base_url, logprobs=3)   # resumed: nothing asked
    assert len(teacher.requests) == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q?", "context": 3}) + "\n")
    with pytest.raises(DataError, match="record 0.*'context'"):
        label(input=str(bad), output=str(tmp_path / "x.json"), teacher=teacher.base_url)


def test_cli_synth_and_label(tmp_path, teacher, tiny_embedder_dir, capsys):
    kb = write_kb(tmp_path / "kb", GOOD)
    out = tmp_path / "out"
    rc = main(["data", "synth", str(kb), "--teacher", teacher.base_url, "--output", str(out), "--embed",
               str(tiny_embedder_dir), "--min-chunk-chars", "10", "--neg-num", "1", "--eval-fraction", "0.3", "--json"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["records_out"] == json.loads((out / "summary.json").read_text())["records_out"] > 0
    src = tmp_path / "q.json"
    src.write_text(json.dumps([{"q": "What is the code of pump Beta?", "ctx": GOOD["pumps/beta.txt"]}]))
    rc = main(["data", "label", str(src), "--teacher", teacher.base_url, "--output", str(tmp_path / "l.jsonl"),
               "--question-field", "q", "--context-field", "ctx"])
    assert rc == 0 and json.loads((tmp_path / "l.jsonl").read_text())["output"] == "K-202"
    rc = main(["data", "synth", str(kb), "--teacher", teacher.base_url, "--output", str(out), "--lang", "fr"])
    assert rc != 0
