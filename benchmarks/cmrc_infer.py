"""Inference on the seeded CMRC2018 test sample: the builtin engine plain, with shared-prefix KV reuse,
and with extractive decoding (vocab / span), for speed (items/s) and quality (exact, CMRC EM/F1, origin).

    python benchmarks/cmrc_infer.py --model RUN_DIR/finetune_llm/model [--items 200] [--out benchmarks/results/cmrc_infer.md]
    python benchmarks/cmrc_infer.py --model M --passages 50 --variants plain,prefix-cache   # every question of 50 passages
    git worktree add /tmp/old ed9984c && python benchmarks/cmrc_infer.py --model M --reference-src /tmp/old/src
        # adds "reference plain": the plain variant run on another checkout's engine (ed9984c: HF generate)

Each variant runs in its own process, one after another (one model on the 2 cores at a time), on the
same items, with the same greedy settings as `ragtune run` (max_tokens 64, batch 16). The sample is the
seeded 200 of `ragtune run`'s prepare_data (seed 2026), so results line up with BENCHMARKS.md; with
``--passages N`` it is every question of N seeded passages instead (the structure of the whole test
set, ~3.9 questions per passage, where a random sample has ~1.4).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_paths import data_file

VARIANTS = {
    "plain": {"prefix_cache": False},
    "prefix-cache": {"prefix_cache": True},
    "prefix-cache + extractive vocab": {"prefix_cache": True, "extractive": "vocab"},
    "prefix-cache + extractive span": {"prefix_cache": True, "extractive": "span"},
}


def sample(n: int, seed: int, work: Path, passages: int | None = None) -> Path:
    from ragtune.data.squad import evalset

    full = work / "test_all.json"
    evalset(data_file("cmrc2018/test.json", flag="CMRC_TEST", explicit=os.environ.get("CMRC_TEST")), full)
    rows = json.loads(full.read_text(encoding="utf-8"))
    if passages:
        contexts = sorted({r["context"] for r in rows})
        chosen = set(random.Random(seed).sample(contexts, min(passages, len(contexts))))
        picked = [i for i, r in enumerate(rows) if r["context"] in chosen]
    else:
        picked = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    out = work / f"test_{len(picked)}.json"
    out.write_text(json.dumps([rows[i] for i in picked], ensure_ascii=False), encoding="utf-8")
    return out


def child(model: str, evalset: str, variant: str, out: str, threads: int) -> None:
    import torch

    from ragtune.data.squad import TEMPLATES
    from ragtune.infer.runner import InferConfig, run_infer

    torch.set_num_threads(threads)
    opts = VARIANTS[variant]
    cfg = InferConfig(evalset=evalset, output=out, model=model, max_tokens=64, batch_size=16,
                      template=TEMPLATES["zh"], extractive=opts.get("extractive", "off"),
                      settings={"prefix_cache": opts["prefix_cache"]}, restart=True)
    start = time.perf_counter()
    run_infer(cfg, show_progress=False)
    print("RESULT " + json.dumps({"seconds": time.perf_counter() - start}), flush=True)


def score(evalset: Path, predictions: Path, work: Path) -> dict:
    from ragtune.eval.runner import evaluate_llm

    run = evaluate_llm(evalset=str(evalset), predictions=str(predictions), output=str(work / "evals"),
                       metrics=["exact", "cmrc_em", "cmrc_f1", "origin"], exact_mode="strict")
    return {k: v["mean"] for k, v in run.summary["metrics"].items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="a fine-tune output dir (or any model)")
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--passages", type=int, help="every question of this many seeded passages (not --items)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma list of: " + ", ".join(VARIANTS))
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cmrc_infer.md"))
    ap.add_argument("--reference-src", help="also run the plain variant on this checkout's src/ (an older engine); "
                    "speed-ups are then against it")
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        return child(args.model, args.child[0], args.child[1], args.child[2], args.threads)
    work = Path(tempfile.mkdtemp(prefix="cmrc_infer_"))
    variants = [v.strip() for v in args.variants.split(",")]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or "plain" not in variants:
        raise SystemExit(f"--variants: unknown {unknown}; plain (the reference) is required")
    evalset = sample(args.items, args.seed, work, args.passages)
    items = json.loads(evalset.read_text(encoding="utf-8"))
    n_items, n_passages = len(items), len({r["context"] for r in items})
    load_before = os.getloadavg()
    rows = {}
    runs = [(name, name, None) for name in variants]
    if args.reference_src:
        src = str(Path(args.reference_src).resolve())
        runs.insert(0, ("reference plain", "plain", src))
    for label, name, src in runs:
        preds = work / f"{label.replace(' ', '_')}.json"
        env = dict(os.environ, PYTHONPATH=src) if src else None   # PYTHONPATH comes before the editable install
        proc = subprocess.run([sys.executable, __file__, "--model", args.model, "--threads", str(args.threads),
                               "--child", str(evalset), name, str(preds)], capture_output=True, text=True, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"{label} failed:\n{proc.stderr[-3000:]}")
        seconds = json.loads(lines[-1][7:])["seconds"]
        rows[label] = {"seconds": seconds, "items_s": n_items / seconds, **score(evalset, preds, work)}
        print(label, rows[label], file=sys.stderr, flush=True)
    reference = runs[0][0]
    plain = rows[reference]
    same = {}
    base_preds = json.loads((work / f"{reference.replace(' ', '_')}.json").read_text(encoding="utf-8"))
    for name in rows:
        preds = json.loads((work / f"{name.replace(' ', '_')}.json").read_text(encoding="utf-8"))
        same[name] = sum(a["prediction"] == b["prediction"] for a, b in zip(base_preds, preds)) / len(preds)
    lines = ["# CMRC2018 inference: shared-prefix KV reuse and extractive decoding", "",
             f"Command: `python benchmarks/cmrc_infer.py {' '.join(sys.argv[1:])}`  ",
             f"Date: {datetime.date.today()}; load average {load_before[0]:.1f} before, "
             f"{os.getloadavg()[0]:.1f} after (2-core CPU).  ",
             f"{n_items} test items over {n_passages} passages ({n_items / n_passages:.2f} questions each; "
             f"{'every question of seeded passages' if args.passages else 'seeded item sample'}, seed {args.seed}); "
             "greedy, max_tokens 64, batch 16." + (f" reference plain: the plain variant on {args.reference_src}."
                                                     if args.reference_src else ""), "",
             f"| variant | items/s | speed-up | same answers as {reference} | exact | CMRC EM | CMRC F1 | origin |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['items_s']:.3f} | {r['items_s'] / plain['items_s']:.2f}x | "
                     f"{100 * same[name]:.1f}% | {100 * r['exact']:.2f} | {100 * r['cmrc_em']:.2f} | "
                     f"{100 * r['cmrc_f1']:.2f} | {100 * r['origin']:.2f} |")
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
