"""Benchmark (b): gemma-3-270m fine-tuned ONLY on QA synthesised from CMRC2018 training passages vs
on the human QA of the same passages, scored on the seeded 200 test items of benchmarks/cmrc_sft.py.

    python benchmarks/synth_cmrc_sft.py --workdir /tmp/synth_cmrc [--teacher qwen2.5-coder-1.5b | URL]
        [--passages 400] [--questions-per-chunk 3] [--test-n 200]

1. A seeded sample of ``--passages`` distinct CMRC train passages becomes a folder of documents;
   ``ragtune data synth`` (Chinese prompt, ``--eval-fraction 0``) writes the synth SFT set with the
   chapter's Chinese template (the one cmrc_sft.py trains with).
2. The human SFT set: the human QA of the same passages (``data convert --template-lang zh``),
   cut to the synth set's size (seeded), so only the questions/answers differ.
3. Both train with cmrc_sft.py's recipe (LoRA r16, lr 2e-4, batch 4, 1 epoch) and are scored like
   it on its seeded 200 test items: exact (strict, lenient), official CMRC2018 EM/F1, cosine, origin.
   The base model is scored too.

Results: WORKDIR/result.json and benchmarks/results/synth_cmrc_p{PASSAGES}.md.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import cmrc_sft
from data_paths import data_file
from synth_common import teacher_url, write_passages

RESULTS = Path(__file__).parent / "results"


def results_file(passages: int) -> Path:
    """One file per synth size, so that runs at different sizes sit side by side."""
    return RESULTS / f"synth_cmrc_p{passages}.md"


def results_markdown(result: dict, test_n: int) -> str:
    keys = ["exact", "exact_lenient", "cmrc_em", "cmrc_f1", "cosine", "origin"]
    table = ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, sc in result["scores"].items():
        table.append(f"| {name} | " + " | ".join(f"{100 * sc[k]:.2f}" for k in keys) + " |")
    return (f"# (b) CMRC2018: gemma-3-270m tuned on synthetic vs human QA\n\nTeacher: {result['teacher']}; "
            f"{result['passages']} train passages -> {result['synth_rows']} synth SFT rows (rejected: "
            f"{result['synth_summary'].get('rejected')}) in {result['synth_seconds']:.0f} s; human-tuned: "
            f"{result['human_rows']} human rows of the same passages. Test: the seeded {test_n} items of "
            f"cmrc_sft.py. Metrics in %. Run {result['date']}.\n\n" + "\n".join(table) + "\n")


def cmrc_scores(work: Path, label: str, evalset: Path, model: str) -> dict:
    """cmrc_sft's scores plus the official CMRC2018 EM / F1 on the same predictions."""
    from ragtune.eval.runner import evaluate_llm

    score = cmrc_sft.predict_and_score(work, label, evalset, model, None)
    preds = work / "predictions" / f"{label}__{evalset.stem}.json"
    run = evaluate_llm(evalset=str(evalset), predictions=str(preds), output=str(work / "evals"), name=label + "-cmrc",
                       metrics=["cmrc_em", "cmrc_f1"])
    m = run.summary["metrics"]
    return {**score, "cmrc_em": m["cmrc_em"]["mean"], "cmrc_f1": m["cmrc_f1"]["mean"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/synth_cmrc")
    ap.add_argument("--teacher", default="qwen2.5-coder-1.5b")
    ap.add_argument("--passages", type=int, default=400)
    ap.add_argument("--questions-per-chunk", type=int, default=3)
    ap.add_argument("--test-n", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=None, help="cap training steps (smoke runs)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    work = Path(args.workdir)
    train_rows = json.loads(data_file("cmrc2018/train.json", flag="$RAGTUNE_DATA_DIR").read_text(encoding="utf-8"))
    contexts = sorted({r["context"] for r in train_rows})
    random.Random(cmrc_sft.SEED).shuffle(contexts)
    picked = contexts[: args.passages]
    docs = write_passages(picked, work / "docs", "cmrc")

    from ragtune.synth import synthesize

    t0 = time.perf_counter()
    with teacher_url(args.teacher) as url:
        s = synthesize(docs=str(docs), output=str(work / "synth"), teacher=url, lang="zh", embed="",
                       questions_per_chunk=args.questions_per_chunk, eval_fraction=0, neg_num=0, max_tokens=384,
                       concurrency=args.concurrency, seed=cmrc_sft.SEED, splitter="none")   # a passage = a chunk
    synth_s = time.perf_counter() - t0
    synth = json.loads((work / "synth" / "sft.json").read_text(encoding="utf-8"))

    from ragtune.data.squad import squad_to_alpaca

    keep = set(picked)
    same = work / "data" / "human_same_passages_squad.json"
    same.parent.mkdir(parents=True, exist_ok=True)
    same.write_text(json.dumps([r for r in train_rows if r["context"] in keep], ensure_ascii=False), encoding="utf-8")
    human_all = work / "data" / "human_same_passages.json"
    squad_to_alpaca(same, human_all, template_lang="zh")
    human = json.loads(human_all.read_text(encoding="utf-8"))
    random.Random(cmrc_sft.SEED).shuffle(human)
    human_file = work / "data" / "human_sft.json"
    human_file.write_text(json.dumps(human[: len(synth)], ensure_ascii=False), encoding="utf-8")

    recipe = dict(cmrc_sft.RECIPE, **({"max_steps": args.max_steps} if args.max_steps else {}))
    test = cmrc_sft.test_file(work, data_file("cmrc2018/test.json", flag="$RAGTUNE_DATA_DIR"), args.test_n)
    runs = {"base": "gemma-3-270m"}
    for name, data in (("synth-tuned", work / "synth" / "sft.json"), ("human-tuned", human_file)):
        cmrc_sft.train(work, name, data, recipe, None)
        runs[name] = str(work / name / "finetune")
    scores = {name: cmrc_scores(work, name, test, model) for name, model in runs.items()}
    result = {"teacher": s.notes.get("teacher"), "synth_seconds": round(synth_s, 1), "synth_summary": s.to_dict(),
              "passages": len(picked), "synth_rows": len(synth), "human_rows": min(len(human), len(synth)),
              "scores": scores, "date": time.strftime("%Y-%m-%d")}
    (work / "result.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    text = results_markdown(result, args.test_n)
    print(text)
    if not args.no_write:
        results_file(len(picked)).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
