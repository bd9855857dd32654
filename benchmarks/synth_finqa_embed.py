"""Benchmark (a): all-MiniLM-L6-v2 fine-tuned ONLY on queries synthesised from the training passages
of financial-qa-10K, evaluated on the HUMAN eval queries: base vs synth-tuned vs human-tuned.

    python benchmarks/synth_finqa_embed.py --workdir /tmp/synth_finqa [--teacher qwen2.5-coder-1.5b | URL]
        [--passages 300] [--questions-per-chunk 1] [--max-pairs 1024]

1. ``ragtune data embed-pairs`` on the data (seed 1314, 10% eval): the human train pairs, the human
   eval queries (698) and the KB (697 passages): the same split as benchmarks/finqa_embed.py.
2. A seeded sample of ``--passages`` distinct TRAIN passages becomes a folder of documents (one per
   passage); ``ragtune data synth`` asks the teacher for queries (``--eval-fraction 0``: the eval is
   the human one) and mines negatives with the base embedder among the other train passages.
3. Two fine-tunes with the recipe of finqa_embed.py (group size 1, lr 5e-5, 1 epoch): on the synth
   pairs, and on the same number of human pairs of the same passages (so only the queries differ).
4. ``ragtune eval retrieval`` of base, synth-tuned and human-tuned on the human eval queries + KB.

Results: WORKDIR/result.json and benchmarks/results/synth_finqa.md (teacher, its stats, the table).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from data_paths import data_file
from synth_common import teacher_url, write_passages

RESULTS = Path(__file__).parent / "results" / "synth_finqa.md"
SEED = 1314


def human_split(work: Path) -> Path:
    from ragtune.data.embed_pairs import embed_pairs

    out = work / "human"
    if not (out / "train.jsonl").exists():
        embed_pairs(data_file("financial_qa_10k/data.json", flag="$RAGTUNE_DATA_DIR"), out, seed=SEED)
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def finetune(train: Path, out: Path, max_pairs: int, epochs: float) -> Path:
    import ragtune as rt

    if (out / "metrics.json").exists():
        return out
    rt.finetune.embedding.run("all-MiniLM-L6-v2", str(train), str(out), train_group_size=1, learning_rate=5e-5,
                              num_train_epochs=epochs, max_samples=max_pairs, dtype="fp32", eval_split=0.05)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/synth_finqa")
    ap.add_argument("--teacher", default="qwen2.5-coder-1.5b", help="a synth_common TEACHERS name or a URL")
    ap.add_argument("--passages", type=int, default=300, help="train passages the teacher writes queries for")
    ap.add_argument("--questions-per-chunk", type=int, default=1)
    ap.add_argument("--max-pairs", type=int, default=1024)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="do not update benchmarks/results (smoke runs)")
    args = ap.parse_args(argv)
    work = Path(args.workdir)
    human = human_split(work)
    train = read_jsonl(human / "train.jsonl")
    passages = sorted({r["pos"][0] for r in train})
    random.Random(SEED).shuffle(passages)
    picked = passages[: args.passages]
    docs = write_passages(picked, work / "docs", "passage")

    from ragtune.synth import synthesize

    t0 = time.perf_counter()
    with teacher_url(args.teacher) as url:
        s = synthesize(docs=str(docs), output=str(work / "synth"), teacher=url, lang="en",
                       questions_per_chunk=args.questions_per_chunk, eval_fraction=0, min_chunk_chars=20,
                       neg_num=7, max_tokens=256, concurrency=args.concurrency, seed=SEED)
    synth_s = time.perf_counter() - t0
    synth_pairs = read_jsonl(work / "synth" / "embed_train.jsonl")
    # the human pairs of the same passages, as many as the synth ones: only the queries differ
    keep = set(picked)
    human_same = [r for r in train if r["pos"][0] in keep]
    random.Random(SEED).shuffle(human_same)
    human_same = human_same[: len(synth_pairs)]
    human_file = work / "human_same_passages.jsonl"
    human_file.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in human_same) + "\n", encoding="utf-8")

    tuned_synth = finetune(work / "synth" / "embed_train.jsonl", work / "tuned_synth", args.max_pairs, args.epochs)
    tuned_human = finetune(human_file, work / "tuned_human", args.max_pairs, args.epochs)
    from ragtune.eval.retrieval_eval import evaluate_retrieval

    report = evaluate_retrieval(evalset=str(human / "eval.jsonl"), kb=str(human / "kb"), ks=[1, 5, 10],
                                embed=["all-MiniLM-L6-v2", str(tuned_synth), str(tuned_human)],
                                output=str(work / "retrieval"))
    rows = {name: m["metrics"] for name, m in zip(["base", "synth-tuned", "human-tuned"], report["models"])}
    result = {"teacher": s.notes.get("teacher"), "synth_seconds": round(synth_s, 1), "synth_summary": s.to_dict(),
              "passages": len(picked), "synth_pairs": len(synth_pairs), "human_pairs": len(human_same),
              "retrieval": rows, "date": time.strftime("%Y-%m-%d")}
    (work / "result.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    table = ["| embedder | recall@1 | recall@5 | nDCG@10 | MRR@10 |", "|---|---|---|---|---|"]
    for name, m in rows.items():
        table.append(f"| {name} | {100 * m['recall@1']:.2f} | {100 * m['recall@5']:.2f} | {100 * m['ndcg@10']:.2f} "
                     f"| {100 * m['mrr@10']:.2f} |")
    text = (f"# (a) financial QA: embedder tuned on synthetic vs human queries\n\n"
            f"Teacher: {result['teacher']}; {len(picked)} train passages -> {len(synth_pairs)} synth pairs "
            f"({s.records_out} kept of {s.notes.get('questions from the teacher')} questions; rejected: "
            f"{s.rejected}) in {synth_s:.0f} s. Human-tuned: {len(human_same)} human pairs of the same passages. "
            f"Eval: the {rows['base']['n_queries']} human eval queries over {rows['base']['n_nodes']} KB passages.\n\n"
            + "\n".join(table) + "\n")
    print(text)
    if not args.no_write:
        RESULTS.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
