"""Real run: fine-tune all-MiniLM-L6-v2 on financial-qa-10K; speed of both trainers; base vs tuned.

    python benchmarks/finqa_embed.py [--data FILE] [--workdir DIR] [--speed-steps 8] \
        [--time-budget 30] [--epochs 2] [--batch-size 64] [--group-size 2] [--lr 1e-4] [--mine-negatives]

1. ``ragtune data embed-pairs`` recipe (seed 1314, test_size 0.1, 10 negatives, bge instruction).
2. Speed, in this one process: the sentence-transformers trainer (what ragtune used before) and
   ragtune's trainer, each for ``--speed-steps`` steps on the same rows, twice in the order
   ST, ragtune, ST, ragtune (so a change of load on a shared box hits both); examples/s each.
   Plus the padded tokens per batch each would compute (the profile's finding).
3. The real fine-tune with ragtune's trainer under ``--time-budget`` minutes (dev nDCG@10 every
   ``--eval-steps``, best weights kept); base vs tuned on the 698 held-out queries against ALL
   passages of the data set (eval + training passages: 6.9k, not only the eval ones).
4. With ``--rag-eval``: ``ragtune eval retrieval`` (Document + Retriever, the chapter's context
   recall / relevance at topk=1) on a knowledge base of all passages, base and tuned.
Writes WORKDIR/results.json and WORKDIR/results.md.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_paths import data_file


def padded_tokens(model, rows: list[dict], batch: int, group: int, q_max: int, p_max: int) -> dict[str, float]:
    """Tokens per batch as each trainer pads them: ST pads each column to its longest text under
    one shared max length; ragtune caps each side and pads length-sorted micro-batches."""
    from ragtune.finetune.embed.fast_backend import MICRO_BATCH_TOKENS, micro_batches, token_lengths

    shared = max(q_max, p_max)
    out = {"real": [], "st": [], "ragtune": []}
    for start in range(0, min(len(rows), 40 * batch), batch):
        b = rows[start:start + batch]
        q = token_lengths(model, [r["query"] for r in b], q_max)
        cols = [[r["pos"][0] for r in b]] + [[r["neg"][j] for r in b] for j in range(group - 1)]
        p = [token_lengths(model, c, p_max) for c in cols]
        st_q = [min(shared, x) for x in token_lengths(model, [r["query"] for r in b], shared)]
        st_p = [token_lengths(model, c, shared) for c in cols]
        out["real"].append(sum(q) + sum(map(sum, p)))
        out["st"].append(len(b) * max(st_q) + sum(len(c) * max(c) for c in st_p))
        flat = q + [x for c in p for x in c]
        rag = 0
        for side in (q, [x for c in p for x in c]):
            for g in micro_batches(list(range(len(side))), side, MICRO_BATCH_TOKENS):
                rag += len(g) * max(side[i] for i in g)
        out["ragtune"].append(rag)
        del flat
    return {k: round(statistics.mean(v), 1) for k, v in out.items()}


def speed(work: Path, args, trainer: str, tag: str, **kw) -> dict:
    from ragtune.finetune.embed import finetune_embedding

    res = finetune_embedding(
        base=args.base, train=str(work / "train.jsonl"), output=str(work / f"speed-{tag}"), eval_split=0,
        trainer=trainer, max_steps=args.speed_steps, per_device_train_batch_size=args.speed_batch_size,
        train_group_size=args.group_size, learning_rate=args.lr, seed=1314, logging_steps=1,
        query_max_len=64, passage_max_len=256, **kw)
    secs = res.metrics["train_seconds"]
    ex = args.speed_steps * args.speed_batch_size
    return {"trainer": trainer + ("" if kw.get("dropout", True) else " (no dropout)"), "steps": args.speed_steps, "examples": ex, "seconds": secs,
            "examples_per_second": round(ex / secs, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None, help="financial-qa-10K data.json (default: the data_paths resolver)")
    ap.add_argument("--workdir", default="/tmp/finqa_embed")
    ap.add_argument("--base", default="all-MiniLM-L6-v2")
    ap.add_argument("--speed-steps", type=int, default=8, help="0: skip the speed comparison")
    ap.add_argument("--speed-batch-size", type=int, default=32)
    ap.add_argument("--time-budget", type=float, default=30.0, help="minutes of training")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--group-size", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--eval-steps", type=int, default=40)
    ap.add_argument("--matryoshka", default=None, help="comma-separated dims, e.g. 384,128")
    ap.add_argument("--mine-negatives", action="store_true", help="hard negatives mined with the base model")
    ap.add_argument("--dev-queries", type=int, default=200)
    ap.add_argument("--no-dropout", action="store_true")
    ap.add_argument("--rag-eval", action="store_true", help="also `ragtune eval retrieval` on a KB of all passages")
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args(argv)

    from ragtune.data.embed_pairs import embed_pairs
    from ragtune.finetune.embed import EmbedFinetuneConfig, finetune_embedding

    work = Path(args.workdir)
    data = data_file("financial_qa_10k/data.json", flag="--data", explicit=args.data)
    if not (work / "train.jsonl").exists():
        embed_pairs(data, work, seed=1314, test_size=0.1, neg_num=10)
    train_file = work / "train.jsonl"
    results: dict = {"args": vars(args), "date": time.strftime("%Y-%m-%d")}
    if args.mine_negatives:
        from ragtune.data.mining import MineNegativesConfig, mine_negatives

        mined = work / "train_mined.jsonl"
        if not mined.exists():
            t0 = time.perf_counter()
            mine_negatives(train_file, mined, MineNegativesConfig.build(model=args.base, range="3-50",
                                                                        neg_num=10))
            results["mining_seconds"] = round(time.perf_counter() - t0, 1)
        train_file = mined

    if args.speed_steps:
        from ragtune.models.loading import load_sentence_transformer

        rows = [json.loads(line) for line in train_file.read_text().splitlines()]
        model = load_sentence_transformer(args.base)
        results["padded_tokens_per_batch"] = padded_tokens(model, rows, args.speed_batch_size, args.group_size, 64, 256)
        variants = [("sentence_transformers", {}), ("ragtune", {}), ("ragtune", {"dropout": False})]
        runs = [speed(work, args, t, f"{t}-{j}-{i}", **kw) for i in range(2) for j, (t, kw) in enumerate(variants)]
        results["speed_runs"] = runs
        names = list(dict.fromkeys(r["trainer"] for r in runs))
        eps = {t: statistics.mean(r["examples_per_second"] for r in runs if r["trainer"] == t) for t in names}
        results["speed"] = {"examples_per_second": {t: round(v, 3) for t, v in eps.items()},
                            "ratio_vs_sentence_transformers": {t: round(v / eps[names[0]], 2) for t, v in eps.items()}}
        print(json.dumps(results["speed"]), json.dumps(results["padded_tokens_per_batch"]), flush=True)

    tuned_dir = work / "tuned"
    if not args.skip_train:
        cfg = EmbedFinetuneConfig.build(
            base=args.base, train=str(train_file), eval_file=str(work / "eval.jsonl"),
            output=str(tuned_dir), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
            train_group_size=args.group_size, learning_rate=args.lr, time_budget_minutes=args.time_budget,
            eval_steps=args.eval_steps, dev_queries=args.dev_queries, dropout=not args.no_dropout, passage_max_len=256, query_max_len=64, seed=1314,
            matryoshka_dims=[int(x) for x in args.matryoshka.split(",")] if args.matryoshka else None)
        t0 = time.perf_counter()
        res = finetune_embedding(cfg)
        keep = ("train_records", "train_rows", "eval_queries", "eval_passages", "train_seconds", "steps", "examples",
                "examples_per_second", "peak_rss_mb", "dev", "time_budget", "tuned_below_base")
        results["finetune"] = {k: res.metrics.get(k) for k in keep}
        results["finetune"]["wall_seconds"] = round(time.perf_counter() - t0, 1)
        results["finetune"]["heldout_base"] = res.base
        results["finetune"]["heldout_tuned"] = res.tuned
        print(json.dumps({k: results["finetune"][k] for k in ("train_seconds", "steps", "examples_per_second")}))
    if args.rag_eval:
        rag_eval(work, args, tuned_dir, results)
    results["peak_rss_mb_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    (work / "results.json").write_text(json.dumps(results, indent=1))
    (work / "results.md").write_text(results_markdown(results))
    return 0


def rag_eval(work: Path, args, tuned_dir: Path, results: dict) -> None:
    """The chapter's retrieval eval (Document + Retriever) on a knowledge base of ALL passages."""
    from ragtune.eval.retrieval_eval import RetrievalEvalConfig, evaluate_retrieval

    kb = work / "kb_all"
    kb.mkdir(exist_ok=True)
    passages = dict.fromkeys(
        [line for line in (work / "kb" / "knowledge_base.txt").read_text().splitlines() if line.strip()]
        + [p for line in (work / "train.jsonl").read_text().splitlines() for p in json.loads(line)["pos"]])
    (kb / "knowledge_base.txt").write_text("\n".join(passages) + "\n")
    t0 = time.perf_counter()
    rep = evaluate_retrieval(RetrievalEvalConfig.build(
        evalset=str(work / "eval.jsonl"), kb=str(kb), embed=[args.base, str(tuned_dir)], topk=1,
        output=str(work / "eval_retrieval")))
    for name, m in zip(("base", "tuned"), rep["models"]):
        results[f"retrieval_{name}"] = m["metrics"]
        print(name, json.dumps(m["metrics"]))
    results["retrieval_seconds_both"] = round(time.perf_counter() - t0, 1)
    results["kb_passages"] = len(passages)


def results_markdown(r: dict) -> str:
    lines = [f"# financial-qa-10K embedding fine-tune ({r['date']})", ""]
    if "speed" in r:
        s = r["speed"]
        lines += ["| trainer | examples/s | vs sentence-transformers |", "|---|---|---|"]
        lines += [f"| {t} | {v} | {s['ratio_vs_sentence_transformers'][t]}x |" for t, v in s["examples_per_second"].items()]
        lines += ["", f"padded tokens per batch: {r['padded_tokens_per_batch']}", ""]
    ft = r.get("finetune")
    if ft:
        b, t = ft["heldout_base"], ft["heldout_tuned"]
        lines += ["| metric (%) | base | tuned | delta |", "|---|---|---|---|"]
        for k in ("ndcg@10", "recall@1", "recall@5", "recall@100", "context_recall@1", "context_relevance@1", "mrr@10"):
            if k in b:
                lines.append(f"| {k} | {100 * b[k]:.2f} | {100 * t[k]:.2f} | {100 * (t[k] - b[k]):+.2f} |")
        lines += ["", f"{b['n_queries']} held-out queries against {b['n_corpus']} passages; training "
                  f"{ft['train_seconds']} s, {ft['steps']} steps, {ft['examples_per_second']} examples/s; "
                  f"below base on: {ft['tuned_below_base'] or 'nothing'}", ""]
    if "retrieval_base" in r:
        lines += ["`ragtune eval retrieval`, topk=1, knowledge base of all passages "
                  f"({r['kb_passages']} lines):", "", "| metric | base | tuned |", "|---|---|---|"]
        for k, v in r["retrieval_base"].items():
            if isinstance(v, (int, float)):
                lines.append(f"| {k} | {v} | {r['retrieval_tuned'].get(k)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
