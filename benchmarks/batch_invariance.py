"""Do greedy answers depend on how requests are batched? (issue 19, item 6)

    python benchmarks/batch_invariance.py --n 32 --batch-sizes 1,8,16 --dtypes fp32,bf16

The builtin engine left-pads the prompts of a batch and runs one ``generate``. In exact arithmetic a
row's logits do not depend on its neighbours; in floating point the matmuls and attention reductions
of a different batch shape round differently, so a greedy choice between two nearly tied tokens can
flip, and the answer diverges from there. This script decodes the same CMRC test prompts (the
chapter's Chinese template, the fine-tune of ``--model`` or the bundled base) at each batch size and
dtype and reports, against batch size 1 of the same dtype:

- how many answers are identical;
- for each differing answer, the top-2 log-probability margin at the first diverging token, taken
  from one exact unpadded forward pass (``engine.token_logprobs``): a flip between tokens whose
  margin is tiny is rounding; a large margin would mean a padding bug.

Results go to stdout and, with ``--out``, are appended to a markdown file.
"""
from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

from data_paths import data_file

SEED = 2026


def first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def main() -> None:
    import json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m", help="model name, model dir or fine-tune output dir")
    ap.add_argument("--test", default=None, help="CMRC2018 test file (default: $RAGTUNE_DATA_DIR/cmrc2018/test.json)")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch-sizes", default="1,8,16")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from ragtune.data.squad import TEMPLATES, fill_template
    from ragtune.engine.base import SamplingParams
    from ragtune.engine.builtin import BuiltinEngine

    rows = json.loads(data_file("cmrc2018/test.json", flag="--test", explicit=args.test).read_text(encoding="utf-8"))
    items = [rows[i] for i in sorted(random.Random(SEED).sample(range(len(rows)), args.n))]
    prompts = [fill_template(TEMPLATES["zh"], it["context"], it["question"]) for it in items]
    params = SamplingParams(max_tokens=args.max_tokens)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    lines = [f"Model `{args.model}`, {args.n} CMRC test prompts (seed {SEED}), {args.max_tokens} new tokens "
             f"greedy, builtin engine; load {os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d')}.", "",
             "| dtype | batch size | same answer as batch 1 | differing: top-2 margin at the first diverging token (max) | s |",
             "|---|---|---|---|---|"]
    for dtype in args.dtypes.split(","):
        ref = None
        for size in sizes:
            engine = BuiltinEngine.load(args.model, dtype=dtype, max_batch_size=size, prefix_cache=False)
            ids = [engine.encode_chat(p) for p in prompts]
            t0 = time.perf_counter()
            out = [c.token_ids for c in engine.generate_ids(ids, params)]
            secs = time.perf_counter() - t0
            if ref is None:
                ref, ref_engine = out, engine
                lines.append(f"| {dtype} | {size} | (reference) | - | {secs:.0f} |")
                print(lines[-1], flush=True)
                continue
            margins = []
            for prompt, a, b in zip(ids, ref, out):
                at = first_divergence(a, b)
                if at is None or at >= len(a):
                    continue
                lp = ref_engine.token_logprobs(prompt, a[:at + 1], 2)[at]
                margins.append(lp.top[0].logprob - lp.top[1].logprob if len(lp.top) > 1 else float("nan"))
            same = sum(a == b for a, b in zip(ref, out))
            worst = f"{max(margins):.4f} ({len(margins)} items)" if margins else "-"
            lines.append(f"| {dtype} | {size} | {same}/{len(ids)} | {worst} | {secs:.0f} |")
            print(lines[-1], flush=True)
            engine.close()
        ref_engine.close()
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(Path(args.out), "a", encoding="utf-8") as fh:
            fh.write("\n" + table + "\n")


if __name__ == "__main__":
    main()
