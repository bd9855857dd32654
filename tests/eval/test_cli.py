"""`ragtune eval llm` / `ragtune eval compare` end to end on small generated data."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ragtune.cli import main

EVALSET = [
    {"context": "北京是中国的首都。", "question": "中国的首都是哪里？", "answers": {"text": ["北京", "北京市"]}},
    {"context": "The pump runs at 5 bar.", "question": "What pressure?", "answers": "5 bar"},
    {"context": "Replace the filter every 500 hours.", "question": "How often?", "answer": "every 500 hours"},
    {"context": "上海是港口城市。", "question": "上海是什么城市？", "answers": "港口城市"},
]


@pytest.fixture
def files(tmp_path):
    ev = tmp_path / "evalset.json"
    ev.write_text(json.dumps(EVALSET, ensure_ascii=False), encoding="utf-8")
    base = tmp_path / "base.jsonl"
    base.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in
                              ["北京烤鸭", "It runs at 5 bar.", "", "港口城市"]) + "\n", encoding="utf-8")
    tuned = tmp_path / "tuned.json"
    tuned.write_text(json.dumps([{"prediction": "北京"}, {"output": "5 bar"}, {"prediction": "every 500 hours."},
                                 {"prediction": "港口城市"}], ensure_ascii=False), encoding="utf-8")
    return tmp_path, ev, base, tuned


def _eval(ev, preds, out, embed, *extra):
    return main(["eval", "llm", "--evalset", str(ev), "--predictions", str(preds), "--output", str(out),
                 "--embed", str(embed), *extra])


def test_eval_llm_writes_items_summary_and_chapter_table(files, tiny_embedder_dir, capsys):
    tmp, ev, base, tuned = files
    assert _eval(ev, tuned, tmp / "runs", tiny_embedder_dir, "--exact-mode", "both", "--name", "tuned") == 0
    (run,) = list((tmp / "runs").glob("eval-*"))
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["name"] == "tuned" and summary["n_items"] == 4
    # exact strict: 北京, 5 bar, 港口城市 = 3 of 4 ("every 500 hours." has a period); lenient: 4 of 4
    assert (summary["metrics"]["exact"]["total"], summary["metrics"]["exact_lenient"]["total"]) == (3.0, 4.0)
    assert summary["metrics"]["origin"]["total"] == 4.0
    assert summary["metrics"]["cosine"]["params"]["embed"] == str(tiny_embedder_dir)
    items = json.loads((run / "items.json").read_text(encoding="utf-8"))
    assert items[0]["context"] == "北京是中国的首都。" and items[0]["all_answers"] == ["北京", "北京市"]
    assert set(items[2]["scores"]["exact"]) == {"value", "status", "reason"}
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "| tuned | 75.00% (3) | 100.00% (4) |" in report and "100.00% (4) | 4 |" in report
    assert "<img" in (run / "report.html").read_text(encoding="utf-8")
    assert "run written to" in capsys.readouterr().out


def test_empty_prediction_and_hallucination_reasons(files, tiny_embedder_dir):
    tmp, ev, base, _ = files
    assert _eval(ev, base, tmp / "runs", tiny_embedder_dir) == 0
    (run,) = list((tmp / "runs").glob("eval-*"))
    items = json.loads((run / "items.json").read_text(encoding="utf-8"))
    assert items[0]["scores"]["origin"]["value"] == 0.0 and "北京烤鸭" in items[0]["scores"]["origin"]["reason"]
    assert items[2]["scores"]["cosine"] == {"value": 0.0, "status": "ok", "reason": "empty prediction"}
    assert items[3]["scores"]["exact"]["value"] == 1.0


def test_compare_runs_markdown_and_html_with_disagreements(files, tiny_embedder_dir, capsys):
    tmp, ev, base, tuned = files
    assert _eval(ev, base, tmp / "runs", tiny_embedder_dir, "--name", "base") == 0
    assert _eval(ev, tuned, tmp / "runs", tiny_embedder_dir, "--name", "tuned") == 0
    runs = sorted((tmp / "runs").glob("eval-*"))
    assert len(runs) == 2                                     # no collision within the same second
    assert main(["eval", "compare", str(tmp / "runs"), "--output", str(tmp / "cmp")]) == 0
    (md,) = list((tmp / "cmp").glob("compare-*.md"))
    (page,) = list((tmp / "cmp").glob("compare-*.html"))
    text = md.read_text(encoding="utf-8")
    assert "| base |" in text and "| tuned |" in text
    # items 0 (origin/exact) and 1 (exact), 2 (empty vs answer) disagree; item 3 is identical
    assert "disagree (3 of 4)" in text
    html = page.read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and "北京烤鸭" in html and "disagree (3 of 4" in html
    assert main(["eval", "compare", str(runs[0]), str(runs[1]), "--output", str(tmp / "cmp")]) == 0
    assert len(list((tmp / "cmp").glob("compare-*.html"))) == 2


def test_bad_inputs_give_errors_naming_file_record_field(files, tiny_embedder_dir, capsys):
    tmp, ev, base, _ = files
    short = tmp / "short.json"
    short.write_text(json.dumps(["a", "b"]))
    assert _eval(ev, short, tmp / "r", tiny_embedder_dir) == 1
    err = capsys.readouterr().err
    assert "short.json" in err and "2 predictions for an eval set of 4 items" in err

    bad = tmp / "bad_eval.json"
    bad.write_text(json.dumps([{"question": "q", "answers": "a"}, {"question": "q2", "context": "c"}]))
    assert _eval(bad, short, tmp / "r", tiny_embedder_dir) == 1
    assert "bad_eval.json, record 1, field 'answers'" in capsys.readouterr().err

    wrong = tmp / "wrong.json"
    wrong.write_text(json.dumps([{"text": "x"}] * 4))
    assert _eval(ev, wrong, tmp / "r", tiny_embedder_dir) == 1
    assert "record 0, field 'prediction'" in capsys.readouterr().err

    assert _eval(ev, base, tmp / "r", tiny_embedder_dir, "--metrics", "exact,bleu") == 1
    err = capsys.readouterr().err
    assert "unknown metric 'bleu'" in err and "origin" in err
    assert not (tmp / "r").exists() or not list((tmp / "r").glob("eval-*"))


def test_compare_refuses_runs_on_different_evalsets(files, tiny_embedder_dir, capsys):
    tmp, ev, base, _ = files
    other = tmp / "other.json"
    other.write_text(json.dumps([dict(e, question=e["question"] + "?") for e in EVALSET], ensure_ascii=False))
    assert _eval(ev, base, tmp / "a", tiny_embedder_dir, "--metrics", "exact") == 0
    assert _eval(other, base, tmp / "b", tiny_embedder_dir, "--metrics", "exact") == 0
    assert main(["eval", "compare", str(tmp / "a"), str(tmp / "b"), "-o", str(tmp / "cmp")]) == 1
    assert "not scored on the same eval set" in capsys.readouterr().err


def test_eval_help_does_not_import_torch():
    code = "import ragtune.cli, sys; ragtune.cli.main(['eval', 'llm', '--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")
