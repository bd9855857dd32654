"""Quality levers of the embedding fine-tune at an equal, short time budget (financial-qa-10K).

    python benchmarks/finqa_embed_levers.py --workdir /tmp/finqa_embed [--budget 8] [--only NAME ...]

Every variant trains all-MiniLM-L6-v2 with ragtune's trainer for ``--budget`` minutes (the planner
fits the step count) and is scored on the 698 held-out queries against the eval passages only
(``eval_corpus: eval``, 697 passages: a cheap pool, enough to rank variants; the headline numbers
use all passages, see finqa_embed.py). Variants: the reference recipe (batch 64, group 2 with
random negatives, lr 1e-4, dropout on), ``dropout: false``, batch 128, lr 5e-5, and hard negatives
mined with the base model (``ragtune data mine-negatives``, range 3-50, default false-negative margin).
Writes WORKDIR/levers.json and WORKDIR/levers.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_paths import data_file

REFERENCE = {"per_device_train_batch_size": 64, "train_group_size": 2, "learning_rate": 1e-4}
VARIANTS: dict[str, dict] = {
    "reference": {},
    "no-dropout": {"dropout": False},
    "batch-128": {"per_device_train_batch_size": 128},
    "lr-5e-5": {"learning_rate": 5e-5},
    "mined-negatives": {"train": "train_mined.jsonl"},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--workdir", default="/tmp/finqa_embed")
    ap.add_argument("--base", default="all-MiniLM-L6-v2")
    ap.add_argument("--budget", type=float, default=8.0, help="training minutes per variant")
    ap.add_argument("--only", nargs="*", default=None, choices=list(VARIANTS))
    args = ap.parse_args(argv)

    from ragtune.data.embed_pairs import embed_pairs
    from ragtune.finetune.embed import finetune_embedding

    work = Path(args.workdir)
    if not (work / "train.jsonl").exists():
        embed_pairs(data_file("financial_qa_10k/data.json", flag="--data", explicit=args.data), work,
                    seed=1314, test_size=0.1, neg_num=10)
    names = args.only or list(VARIANTS)
    out_file = work / "levers.json"
    results: dict = json.loads(out_file.read_text()) if out_file.exists() else {}
    for name in names:
        kw = {**REFERENCE, **VARIANTS[name]}
        train = work / kw.pop("train", "train.jsonl")
        if name == "mined-negatives" and not train.exists():
            from ragtune.data.mining import MineNegativesConfig, mine_negatives

            t0 = time.perf_counter()
            mine_negatives(work / "train.jsonl", train, MineNegativesConfig.build(
                model=args.base, range="3-50", neg_num=10))
            results["mining_seconds"] = round(time.perf_counter() - t0, 1)
        res = finetune_embedding(base=args.base, train=str(train), eval_file=str(work / "eval.jsonl"),
                                 output=str(work / f"lever-{name}"), num_train_epochs=20,
                                 time_budget_minutes=args.budget, eval_corpus="eval", seed=1314, **kw)
        results[name] = {"settings": kw, "steps": res.metrics["steps"], "examples": res.metrics["examples"],
                         "examples_per_second": res.metrics["examples_per_second"],
                         "train_seconds": res.metrics["train_seconds"],
                         "base": {k: res.base[k] for k in ("recall@1", "ndcg@10", "recall@5")},
                         "tuned": {k: res.tuned[k] for k in ("recall@1", "ndcg@10", "recall@5")}}
        print(name, json.dumps(results[name]), flush=True)
        out_file.write_text(json.dumps(results, indent=1))
    rows = ["| variant | steps | examples/s | recall@1 | nDCG@10 | recall@5 |", "|---|---|---|---|---|---|"]
    for name in VARIANTS:
        if name in results:
            r = results[name]
            rows.append(f"| {name} | {r['steps']} | {r['examples_per_second']} | {100 * r['tuned']['recall@1']:.2f} | "
                        f"{100 * r['tuned']['ndcg@10']:.2f} | {100 * r['tuned']['recall@5']:.2f} |")
    base = next(r["base"] for k, r in results.items() if k in VARIANTS)
    rows.append(f"| base (no training) | 0 | - | {100 * base['recall@1']:.2f} | {100 * base['ndcg@10']:.2f} | "
                f"{100 * base['recall@5']:.2f} |")
    (work / "levers.md").write_text("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
