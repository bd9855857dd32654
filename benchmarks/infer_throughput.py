"""Builtin engine (length-sorted dynamic batches) vs a plain per-sample `model.generate` loop.

gemma-3-270m, CMRC test prompts (chapter template, shared prompt builder), N new tokens greedy,
both in the same run on the same token ids. The loop runs at its faster precision (probed on a few
prompts in bf16 and fp32 first). Prints and optionally appends a markdown row.

    python benchmarks/infer_throughput.py --n 100 --new-tokens 32 [--out benchmarks/results/serve.md]
"""
from __future__ import annotations

import argparse
import json
import os
import time


def cmrc_prompts(path: str, n: int) -> list[dict]:
    data = json.load(open(path, encoding="utf-8"))
    return data[:n]


def plain_loop(model, ids_list, new_tokens: int, pad_id: int) -> tuple[float, list[list[int]]]:
    import torch

    outs = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for ids in ids_list:
            x = torch.tensor([ids])
            y = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens,
                               do_sample=False, pad_token_id=pad_id)
            outs.append(y[0, len(ids):].tolist())
    return time.perf_counter() - t0, outs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--data", default="/work/shared/data/cmrc2018/test.json")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--loop-n", type=int, default=None,
                    help="time the per-sample loop on the first K prompts only (default: all N); rates are per prompt")
    ap.add_argument("--probe", type=int, default=3, help="prompts used to pick the loop's faster precision")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from ragtune.infer.runner import CHAPTER_TEMPLATE
    from ragtune.models import resolve_model
    from ragtune.engine.builtin import BuiltinEngine, SamplingParams

    items = cmrc_prompts(args.data, args.n)
    engine = BuiltinEngine.load(args.model, max_batch_size=args.batch_size)  # dtype auto (bf16 here)
    ids = [engine.encode_chat(CHAPTER_TEMPLATE.format(**it)) for it in items]
    lens = [len(x) for x in ids]
    print(f"{len(ids)} prompts, prompt tokens mean {sum(lens)/len(lens):.0f} max {max(lens)}; "
          f"engine dtype {engine.model.dtype}, torch threads {torch.get_num_threads()}", flush=True)
    engine.generate_ids(ids[:2], SamplingParams(max_tokens=2))  # warm-up

    t0 = time.perf_counter()
    done = engine.generate_ids(ids, SamplingParams(max_tokens=args.new_tokens))
    t_engine = time.perf_counter() - t0
    gen_engine = sum(c.completion_tokens for c in done)
    print(f"engine: {t_engine:.1f}s  {len(ids)/t_engine:.3f} prompts/s  {gen_engine/t_engine:.2f} new tok/s", flush=True)

    path = resolve_model(args.model).path
    probe = {}
    models = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        m = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
        plain_loop(m, ids[:1], 2, engine.pad_id)  # warm-up
        t, _ = plain_loop(m, ids[: args.probe], args.new_tokens, engine.pad_id)
        probe[name] = args.probe / t
        models[name] = m
        print(f"loop probe {name}: {probe[name]:.3f} prompts/s", flush=True)
    best = max(probe, key=probe.get)
    loop_ids = ids[: args.loop_n or len(ids)]
    t_loop, outs = plain_loop(models[best], loop_ids, args.new_tokens, engine.pad_id)
    gen_loop = sum(len(o) for o in outs)
    same = sum(o[: len(c.token_ids)] == c.token_ids for o, c in zip(outs, done))
    print(f"loop ({best}) on {len(loop_ids)} prompts: {t_loop:.1f}s  {len(loop_ids)/t_loop:.3f} prompts/s  "
          f"{gen_loop/t_loop:.2f} new tok/s", flush=True)
    speedup = (len(ids) / t_engine) / (len(loop_ids) / t_loop)
    print(f"speedup {speedup:.2f}x; identical greedy outputs {same}/{len(loop_ids)}", flush=True)
    load = os.getloadavg()
    row = (f"| {args.model} | {len(ids)} CMRC test prompts (mean {sum(lens)/len(lens):.0f} tok), {args.new_tokens} new greedy "
           f"| engine bf16 batch {args.batch_size}: {len(ids)/t_engine:.3f} prompts/s, {gen_engine/t_engine:.1f} tok/s "
           f"| loop {best} ({len(loop_ids)} prompts): {len(loop_ids)/t_loop:.3f} prompts/s, {gen_loop/t_loop:.1f} tok/s "
           f"(probe bf16 {probe['bf16']:.3f} / fp32 {probe['fp32']:.3f} prompts/s) "
           f"| **{speedup:.2f}x** | {same}/{len(loop_ids)} | {load[0]:.1f} |")
    print(row)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write(row + "\n")


if __name__ == "__main__":
    main()
