"""How far can shared-prefix KV reuse speed up the seeded CMRC sample? An Amdahl bound, measured.

    python benchmarks/prefill_bound.py --config benchmarks/cmrc/main.yaml [--items 32]

The prefix cache skips the prompt tokens a group of prompts shares (one passage, several questions);
it cannot make the rest of the prefill, or decoding, cheaper. This probe measures, on a finished
``ragtune run``'s tuned model and its seeded test items, through the builtin engine (its dtype):

1. the share of prompt tokens the engine's own grouping (``_shared_prefix_groups``) reuses;
2. prefill speed on one length-sorted batch of 16 (the plain path's shape) and, from the profiler,
   how much of it is matrix multiplication, against a bare bf16/fp32 GEMM of the same shape (the
   box's peak for this op);
3. the plain path's time per item on ``--items`` prompts (whole ``generate_ids``), hence the prefill's
   share of it, and the bound 1 / (1 - reused share x prefill share).

Run it on a quiet box: it is a speed measurement.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cmrc_eos_bias import run_items  # the run's test items, one reader


def reused_share(engine, prompts: list[list[int]]) -> tuple[float, int]:
    groups, _ = engine._shared_prefix_groups(prompts)
    saved = sum(n * (len(members) - 1) for n, members in groups)
    return saved / sum(map(len, prompts)), len(groups)


def prefill_probe(engine, prompts: list[list[int]]) -> dict:
    """One left-padded batch of 16 mid-length prompts, prefilled as the plain path does."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import DynamicCache

    from ragtune.engine.builtin import left_padded

    batch = sorted(prompts, key=len)[len(prompts) // 2 - 8: len(prompts) // 2 + 8]
    ids, mask = left_padded(batch, engine.pad_id)
    total = ids.shape[1]
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    model = engine.model

    def prefill() -> None:
        cache = DynamicCache(config=model.config.get_text_config(decoder=True))
        model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
              logits_to_keep=1)

    with torch.inference_mode():
        prefill()   # warm-up
        t0 = time.perf_counter()
        prefill()
        seconds = time.perf_counter() - t0
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            prefill()
        self_ms = {e.key: e.self_cpu_time_total / 1000 for e in prof.key_averages()}
        tokens = ids.numel()
        a = torch.randn(tokens, 640, dtype=model.dtype)
        w = torch.randn(2048, 640, dtype=model.dtype)
        torch.nn.functional.linear(a, w)
        t0 = time.perf_counter()
        for _ in range(5):
            torch.nn.functional.linear(a, w)
        gemm_s = (time.perf_counter() - t0) / 5
    linear_params = sum(m.weight.numel() for n, m in model.named_modules()
                        if isinstance(m, torch.nn.Linear) and "lm_head" not in n)
    mm_s = self_ms.get("aten::mm", 0.0) / 1000
    top = sorted(self_ms.items(), key=lambda kv: -kv[1])[:6]
    return {"batch": len(batch), "padded_len": total, "tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1), "mm_seconds": round(mm_s, 2),
            "mm_gflops": round(2 * linear_params * tokens / mm_s / 1e9, 1) if mm_s else None,
            "gemm_peak_gflops": round(2 * tokens * 640 * 2048 / gemm_s / 1e9, 1),
            "top_ops_ms": {k: round(v, 1) for k, v in top}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="benchmarks/cmrc/main.yaml")
    ap.add_argument("--items", type=int, default=32, help="prompts for the plain path's time per item")
    args = ap.parse_args(argv)

    from ragtune.engine.base import SamplingParams
    from ragtune.engine.builtin import BuiltinEngine

    _, model, _, test_items = run_items(args.config)
    engine = BuiltinEngine.load(model)
    prompts = [engine.encode_chat(it.prompt) for it in test_items]
    share, groups = reused_share(engine, prompts)
    probe = prefill_probe(engine, prompts)

    engine.prefix_cache = False
    subset = prompts[: args.items]
    params = engine.chat_params(SamplingParams(max_tokens=64))
    t0 = time.perf_counter()
    engine.generate_ids(subset, params)
    per_item = (time.perf_counter() - t0) / len(subset)
    prefill_per_item = sum(map(len, subset)) / len(subset) / probe["tokens_per_s"]
    prefill_share = min(1.0, prefill_per_item / per_item)
    out = {"model": model, "dtype": str(engine.model.dtype), "items": len(prompts),
           "prompt_tokens": sum(map(len, prompts)), "groups": groups, "reused_share": round(share, 3),
           "prefill": probe, "plain_seconds_per_item": round(per_item, 3),
           "prefill_share_of_plain": round(prefill_share, 3),
           "bound_speedup_from_reuse": round(1 / (1 - share * prefill_share), 3),
           "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
