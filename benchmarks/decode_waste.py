"""How much of a batch's decoding is spent on rows that have already finished.

HF ``generate`` keeps a finished row in the batch until the batch's longest row stops. This runs
the plain path (no prefix cache) over the seeded 200 CMRC test items and counts, per batch, the
row-steps used (each row's own completion tokens) against those spent (rows x the longest row).
That is what the engine spent up to commit ed9984c (the 2026-12-03 numbers in BENCHMARKS.md); since
then its own decode loop drops a row the step it finishes, so "spent" here is an upper bound.

    python benchmarks/decode_waste.py MODEL [WORKDIR]
"""
import json
import sys
import time
from pathlib import Path

import cmrc_infer

from ragtune.data.squad import TEMPLATES
from ragtune.engine import builtin
from ragtune.infer.runner import InferConfig, run_infer

log: list[dict] = []
# wrap run_batch to record each batch without changing the engine
orig = builtin.BuiltinEngine.run_batch
def run_batch(self, reqs, cached=None):
    t = time.perf_counter()
    out = orig(self, reqs, cached)
    log.append({"rows": len(reqs), "prompt": max(len(r.ids) for r in reqs),
                "tokens": [c.completion_tokens for c in out], "s": time.perf_counter() - t})
    return out
builtin.BuiltinEngine.run_batch = run_batch
work = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/decode_waste")
work.mkdir(parents=True, exist_ok=True)
ev = cmrc_infer.sample(200, 2026, work)
cfg = InferConfig(evalset=str(ev), output=str(work / "pred.json"), model=sys.argv[1], max_tokens=64, batch_size=16,
                  template=TEMPLATES["zh"], settings={"prefix_cache": False}, restart=True)
t = time.perf_counter()
run_infer(cfg, show_progress=False)
total = time.perf_counter() - t
used = sum(sum(max(1, n) for n in b["tokens"]) for b in log)
spent = sum(b["rows"] * max(b["tokens"]) for b in log)
print(json.dumps({"seconds": total, "items": sum(b["rows"] for b in log), "batches": len(log),
                  "row_steps_used": used, "row_steps_spent": spent, "useful_fraction": used / spent,
                  "mean_tokens": used / sum(b["rows"] for b in log),
                  "per_batch": [(b["rows"], max(b["tokens"]), round(sum(b["tokens"]) / b["rows"], 1), round(b["s"], 1)) for b in log]}))
