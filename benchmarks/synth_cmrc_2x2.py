"""Benchmark (c): the 2x2 on CMRC2018 test passages as the knowledge base: `ragtune run` with the
documents source, no labelled data at all.

    python benchmarks/synth_cmrc_2x2.py --workdir /tmp/synth_2x2 [--teacher qwen2.5-coder-1.5b | URL]
        [--passages 256] [--questions-per-chunk 3] [--eval-fraction 0.2]

The (up to) 256 distinct test passages become one document each. One YAML-equivalent RunConfig:
``data: {from: docs, teacher, lang: zh, splitter: none}`` -> synth -> LoRA gemma-3-270m (cmrc_sft.py's
recipe) on the synth SFT set of the train documents -> all-MiniLM-L6-v2 on the synth pairs (negatives
mined by the base) -> ``eval rag``: base/tuned embedder x base/tuned LLM on the questions of the
held-out documents (top-3 chunks; exact, CMRC EM/F1, SQuAD EM/F1, cosine, origin). The human CMRC
questions are not used anywhere (a second table scores the same four cells on the human questions
of the held-out passages, for reference: ``--human-check``).

Results: WORKDIR/run/eval_rag/report/ (report.md/html) and benchmarks/results/synth_2x2.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import cmrc_sft
from data_paths import data_file
from synth_common import teacher_url, write_passages

RESULTS = Path(__file__).parent / "results" / "synth_2x2.md"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/synth_2x2")
    ap.add_argument("--teacher", default="qwen2.5-coder-1.5b")
    ap.add_argument("--passages", type=int, default=256)
    ap.add_argument("--questions-per-chunk", type=int, default=3)
    ap.add_argument("--eval-fraction", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=None, help="cap LLM training steps (smoke runs)")
    ap.add_argument("--human-check", action="store_true", help="also score the cells on the human questions")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    work = Path(args.workdir)
    test_rows = json.loads(data_file("cmrc2018/test.json", flag="$RAGTUNE_DATA_DIR").read_text(encoding="utf-8"))
    contexts = list(dict.fromkeys(r["context"] for r in test_rows))[: args.passages]
    docs = write_passages(contexts, work / "docs", "cmrc-test")

    from ragtune.workflow.run import RunConfig, run_config

    recipe = {k: v for k, v in cmrc_sft.RECIPE.items() if k != "method"}
    if args.max_steps:
        recipe["max_steps"] = args.max_steps
    t0 = time.perf_counter()
    with teacher_url(args.teacher) as url:
        cfg = RunConfig.build(
            run_dir=str(work / "run"), seed=cmrc_sft.SEED,
            data={"from": "docs", "path": str(docs), "teacher": url, "lang": "zh", "splitter": "none",
                  "questions_per_chunk": args.questions_per_chunk, "eval_fraction": args.eval_fraction,
                  "max_tokens": 384, "concurrency": args.concurrency, "seed": cmrc_sft.SEED, "neg_num": 3},
            llm={"base": "gemma-3-270m", "method": "lora", "finetune": recipe, "infer": {"max_tokens": 64}},
            embed={"base": "all-MiniLM-L6-v2", "topk": 3,
                   "finetune": {"learning_rate": 5e-5, "train_group_size": 2, "dtype": "fp32"}},
            eval={"metrics": ["exact", "cmrc_em", "cmrc_f1", "squad_em", "squad_f1", "cosine", "origin"],
                  "origin_tokenizer": "jieba"})
        runner = run_config(cfg)
    wall = time.perf_counter() - t0
    report = work / "run" / "eval_rag" / "report"
    summary = json.loads((report / "summary.json").read_text(encoding="utf-8"))
    synth = json.loads((work / "run" / "synth" / "out" / "summary.json").read_text(encoding="utf-8"))
    text = (f"# (c) the 2x2 on CMRC2018 test passages (documents only)\n\nTeacher: {synth['notes'].get('teacher')}; "
            f"{len(contexts)} passages, {synth['notes'].get('train items (sft rows = embedding pairs)')} train / "
            f"{synth['notes'].get('eval items')} eval synthetic questions (rejected: {synth['rejected']}); "
            f"stages: {[(r.name, r.status, round(r.seconds)) for r in runner.results]}; wall {wall:.0f} s.\n\n"
            + (report / "report.md").read_text(encoding="utf-8").split("\n## Items where")[0] + "\n")
    if args.human_check:
        text += human_check(work, test_rows, summary)
    print(text)
    if not args.no_write:
        RESULTS.write_text(text, encoding="utf-8")
    return 0


def human_check(work: Path, rows: list[dict], summary: dict) -> str:
    """The same four cells on the HUMAN questions of the held-out passages (reference only)."""
    from ragtune.eval.rag_eval import evaluate_rag

    synth_eval = json.loads((work / "run" / "synth" / "out" / "eval.json").read_text(encoding="utf-8"))
    held = {" ".join(e["context"].split()) for e in synth_eval}
    rows = [{**r, "context": " ".join(r["context"].split())} for r in rows]    # as synth's KB spells it
    rows = [r for r in rows if r["context"] in held]
    empty = [r["id"] for r in rows if not r["question"].strip()]    # the official test set has two (e.g. TRIAL_20_QUERY_0)
    items = [{"question": r["question"], "answers": r["answers"]["text"], "context": r["context"], "lang": "zh"}
             for r in rows if r["question"].strip()]
    path = work / "human_eval.json"
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    evaluate_rag(evalset=str(path), kb=str(work / "run" / "synth" / "out" / "kb"), output=str(work / "human_2x2"),
                 embeds=summary["embeds"], llms=summary["llms"], topk=3, max_tokens=64,
                 metrics=["exact", "cmrc_em", "cmrc_f1", "cosine", "origin"], origin_tokenizer="jieba")
    md = (work / "human_2x2" / "report.md").read_text(encoding="utf-8").split("\n## Items where")[0]
    skipped = f" ({len(empty)} records with an empty question skipped: {', '.join(empty)})" if empty else ""
    return f"\n## The same cells on the {len(items)} human questions of the held-out passages{skipped}\n\n" + md + "\n"


if __name__ == "__main__":
    sys.exit(main())
