"""Real run: fine-tune all-MiniLM-L6-v2 on financial-qa-10K and compare base vs tuned retrieval.

    python benchmarks/finqa_embed.py --data /work/shared/data/financial_qa_10k/data.json \
        --workdir /tmp/finqa_embed [--max-samples N] [--epochs E] [--skip-train]

1. ``ragtune data embed-pairs`` recipe (seed 1314, test_size 0.1, 10 negatives, bge instruction).
2. ``rt.finetune.embedding`` on the train split (held-out eval = eval.jsonl), time + peak memory.
3. Retrieval eval on the held-out queries against the knowledge base (line = node), topk=1:
   context recall / relevance, plus recall@5 and MRR@10, for the base and the tuned model.
Writes WORKDIR/results.json and WORKDIR/results.md.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/shared/data/financial_qa_10k/data.json")
    ap.add_argument("--workdir", default="/tmp/finqa_embed")
    ap.add_argument("--base", default="all-MiniLM-L6-v2")
    ap.add_argument("--max-samples", type=int, default=None)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--group-size", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args(argv)

    from ragtune.data.embed_pairs import embed_pairs
    from ragtune.finetune.embed import EmbedFinetuneConfig, finetune_embedding

    work = Path(args.workdir)
    if not (work / "train.jsonl").exists():
        embed_pairs(args.data, work, seed=1314, test_size=0.1, neg_num=10)
    tuned_dir = work / "tuned"
    results: dict = {"args": vars(args)}
    if not args.skip_train:
        cfg = EmbedFinetuneConfig.build(
            base=args.base, train=str(work / "train.jsonl"), eval_file=str(work / "eval.jsonl"),
            output=str(tuned_dir), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
            train_group_size=args.group_size, learning_rate=args.lr, max_samples=args.max_samples,
            dtype=args.dtype, passage_max_len=256, query_max_len=64, seed=1314)
        t0 = time.perf_counter()
        res = finetune_embedding(cfg)
        results["finetune"] = {k: res.metrics[k] for k in ("train_records", "eval_queries", "train_seconds", "peak_rss_mb")}
        results["finetune"]["wall_seconds"] = round(time.perf_counter() - t0, 1)
        results["finetune"]["heldout_base"] = res.base
        results["finetune"]["heldout_tuned"] = res.tuned
        print(json.dumps(results["finetune"], indent=1))
    from ragtune.eval.retrieval_eval import RetrievalEvalConfig, evaluate_retrieval

    t0 = time.perf_counter()
    rep = evaluate_retrieval(RetrievalEvalConfig.build(
        evalset=str(work / "eval.jsonl"), kb=str(work / "kb"), embed=[args.base, str(tuned_dir)], topk=1,
        output=str(work / "eval_retrieval")))   # retrieval.md/.png compare both models
    for name, m in zip(("base", "tuned"), rep["models"]):
        results[f"retrieval_{name}"] = m["metrics"]
        print(name, json.dumps(m["metrics"]))
    results["retrieval_seconds_both"] = round(time.perf_counter() - t0, 1)
    results["peak_rss_mb_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    name = "results_eval_only.json" if args.skip_train else "results.json"
    (work / name).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
