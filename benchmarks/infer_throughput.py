"""Builtin engine (length-sorted dynamic batches) vs a plain per-sample `model.generate` loop,
and (``--llamacpp``) the llama.cpp engine, single stream and concurrent, on the same prompts.

gemma-3-270m, CMRC test prompts (chapter template, shared prompt builder), N new tokens greedy,
both in the same run on the same token ids. The loop runs at its faster precision (probed on a few
prompts in bf16 and fp32 first). Prints and optionally appends a markdown row.

    python benchmarks/infer_throughput.py --n 100 --new-tokens 32 [--out benchmarks/results/serve.md]

With ``--llamacpp`` the same run also measures, on the same prompt ids: the builtin engine single
stream (one request at a time through ``submit``), llama.cpp single stream (``slots=1``, one request
at a time) and llama.cpp concurrent (``--slots`` parallel sequences, every prompt submitted at
once), as items/s and new tokens/s, plus how many answers equal the builtin engine's. The GGUF is
the bundled Q4_K_M (``--gguf``: an export folder or .gguf instead). ``--skip-loop`` drops the
per-sample loop (the slowest part).

    python benchmarks/infer_throughput.py --n 200 --new-tokens 32 --llamacpp --skip-loop --threads 2 \
        --out benchmarks/results/serve.md
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from data_paths import data_file


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
    ap.add_argument("--data", default=None, help="CMRC2018 test file (default: $RAGTUNE_DATA_DIR/cmrc2018/test.json)")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--loop-n", type=int, default=None,
                    help="time the per-sample loop on the first K prompts only (default: all N); rates are per prompt")
    ap.add_argument("--probe", type=int, default=3, help="prompts used to pick the loop's faster precision")
    ap.add_argument("--out", default=None)
    ap.add_argument("--llamacpp", action="store_true", help="also measure the llama.cpp engine (and builtin single stream)")
    ap.add_argument("--gguf", default=None, help="llama.cpp model: export folder or .gguf (default: the bundled Q4_K_M)")
    ap.add_argument("--slots", type=int, default=8, help="llama.cpp parallel sequences for the concurrent run")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    ap.add_argument("--single-n", type=int, default=None, help="single-stream runs on the first K prompts only")
    ap.add_argument("--skip-loop", action="store_true", help="skip the per-sample model.generate loop")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from ragtune.engine.builtin import BuiltinEngine, SamplingParams
    from ragtune.infer.runner import CHAPTER_TEMPLATE
    from ragtune.models import resolve_model

    args.data = str(data_file("cmrc2018/test.json", flag="--data", explicit=args.data))
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
    if args.llamacpp:
        llamacpp_table(args, engine, ids, done, t_engine)
    if args.skip_loop:
        return

    path = getattr(engine.model, "name_or_path", None) or resolve_model(args.model).path   # a fine-tune dir: its merged/
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


def single_stream(engine, ids, params) -> tuple[float, list]:
    """One request at a time through ``submit`` (what an interactive user sees)."""
    out = []
    t0 = time.perf_counter()
    for x in ids:
        out.append(engine.submit(x, params).result())
    return time.perf_counter() - t0, out


def llamacpp_table(args, builtin, ids, builtin_done, t_builtin: float) -> None:
    """builtin single/concurrent vs llama.cpp single/concurrent on the same prompt ids."""
    from ragtune.engine.builtin import SamplingParams
    from ragtune.engine.llamacpp import LlamaCppEngine

    params = SamplingParams(max_tokens=args.new_tokens)
    single_ids = ids[: args.single_n or len(ids)]
    rows = [("builtin", f"concurrent (batches of {args.batch_size})", len(ids), t_builtin, builtin_done)]
    builtin.generate_ids(single_ids[:1], SamplingParams(max_tokens=2))
    t, out = single_stream(builtin, single_ids, params)
    rows.append(("builtin", "single stream", len(single_ids), t, out))
    print(f"builtin single: {t:.1f}s", flush=True)
    model = args.gguf or args.model
    for mode, slots in (("single stream", 1), (f"concurrent ({args.slots} slots)", args.slots)):
        llama = LlamaCppEngine.load(model, slots=slots, threads=args.threads,
                                    max_model_len=max(len(x) for x in ids) + args.new_tokens)
        assert [llama.encode_chat("x")] == [builtin.encode_chat("x")], "prompt builders differ"
        llama.generate_ids(ids[:1], SamplingParams(max_tokens=2))  # warm-up
        if slots == 1:
            t, out = single_stream(llama, single_ids, params)
            n = len(single_ids)
        else:
            t0 = time.perf_counter()
            out = llama.generate_ids(ids, params)
            t, n = time.perf_counter() - t0, len(ids)
            print("llama.cpp generating-slots histogram:", llama.stats()["generating_slots_histogram"], flush=True)
        rows.append((f"llama.cpp ({Path(str(llama.source.gguf)).name})", mode, n, t, out))
        print(f"llama.cpp {mode}: {t:.1f}s", flush=True)
        llama.close()
    load = os.getloadavg()[0]
    lines = ["| engine | mode | items | seconds | items/s | new tok/s | same answer as builtin batched | load |",
             "|---|---|---|---|---|---|---|---|"]
    for name, mode, n, t, out in rows:
        toks = sum(c.completion_tokens for c in out)
        same = sum(a.text == b.text for a, b in zip(out, builtin_done))
        lines.append(f"| {name} | {mode} | {n} | {t:.1f} | {n / t:.3f} | {toks / t:.1f} | {same}/{n} | {load:.1f} |")
    table = "\n".join(lines)
    print(table, flush=True)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write(f"\n{args.n} CMRC test prompts, {args.new_tokens} new tokens greedy, "
                     f"{time.strftime('%Y-%m-%d')}:\n\n{table}\n")


if __name__ == "__main__":
    main()
