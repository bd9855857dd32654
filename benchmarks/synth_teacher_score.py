"""The teacher's own score on benchmark (b)'s test items, beside the students it taught.

    python benchmarks/synth_teacher_score.py --teacher http://127.0.0.1:8001/v1 --workdir /tmp/synth_cmrc [--n 100]

After ``synth_cmrc_sft.py`` has run in WORKDIR: the teacher answers the first ``--n`` of its seeded test
items over HTTP (``ragtune infer --url``, the same chapter prompt, greedy, 64 tokens), and the teacher,
base, synth-tuned and human-tuned predictions are scored on those same ``--n`` items: exact (strict,
lenient), official CMRC2018 EM / F1, origin. Results: WORKDIR/teacher_score.json and stdout. The
teacher's answers are kept (per teacher URL), so it can run while synth_cmrc_sft.py is still training (students not yet
scored are listed under ``not_scored_yet``) and be rerun afterwards to score them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def score(evalset: Path, predictions: Path, out: Path, name: str) -> dict:
    from ragtune.eval.runner import evaluate_llm

    run = evaluate_llm(evalset=str(evalset), predictions=str(predictions), output=str(out), name=name,
                       metrics=["exact", "cmrc_em", "cmrc_f1", "origin"], exact_mode="both", origin_tokenizer="jieba")
    return {k: round(100 * v["mean"], 2) for k, v in run.summary["metrics"].items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="the teacher's OpenAI-compatible base URL")
    ap.add_argument("--workdir", default="/tmp/synth_cmrc")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--test", default="test_200", help="the test file's stem under WORKDIR/data")
    args = ap.parse_args(argv)

    from ragtune.data.squad import TEMPLATES
    from ragtune.infer.runner import InferConfig, run_infer

    work = Path(args.workdir)
    items = json.loads((work / "data" / f"{args.test}.json").read_text(encoding="utf-8"))[: args.n]
    sub = work / "teacher" / f"{args.test}_first{len(items)}.json"
    sub.parent.mkdir(parents=True, exist_ok=True)
    sub.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    preds = {"teacher": work / "teacher" / f"teacher_predictions_first{len(items)}.json"}
    timing = preds["teacher"].with_suffix(".seconds.json")
    cached = json.loads(timing.read_text()) if timing.exists() else {}
    if cached.get("teacher") != args.teacher:   # kept answers of this teacher: a rerun (e.g. once the students exist) only scores
        t0 = time.perf_counter()
        run_infer(InferConfig(evalset=str(sub), output=str(preds["teacher"]), url=args.teacher,
                              template=TEMPLATES["zh"], max_tokens=64, concurrency=4))
        cached = {"teacher": args.teacher, "seconds": round(time.perf_counter() - t0, 1)}
        timing.write_text(json.dumps(cached))
    teacher_s = cached["seconds"]
    missing = []
    for label in ("base", "synth-tuned", "human-tuned"):
        source = work / "predictions" / f"{label}__{args.test}.json"
        if not source.exists():   # synth_cmrc_sft.py has not scored this student yet
            missing.append(label)
            continue
        full = json.loads(source.read_text(encoding="utf-8"))
        preds[label] = work / "teacher" / f"{label}_first{len(items)}.json"
        preds[label].write_text(json.dumps(full[: len(items)], ensure_ascii=False), encoding="utf-8")
    scores = {label: score(sub, path, work / "teacher" / "evals", label) for label, path in preds.items()}
    result = {"teacher": args.teacher, "items": len(items), "teacher_seconds": teacher_s, "scores": scores,
              "not_scored_yet": missing, "date": time.strftime("%Y-%m-%d")}
    (work / "teacher_score.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
