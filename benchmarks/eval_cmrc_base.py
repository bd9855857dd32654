"""Predictions of the base bundled gemma-3-270m on CMRC 2018 test items, for `ragtune eval llm`.

Prompt: the chapter's extraction template rendered with ``ragtune.core.prompt.build_prompt`` (the base
model has no chat template, so ragtune's plain template applies). Greedy, batched, left padding,
bf16 (when the CPU supports it), max_new_tokens 32.

    python benchmarks/eval_cmrc_base.py --n 50 --out /tmp/cmrc_base
    ragtune eval llm --evalset /tmp/cmrc_base/evalset.json --predictions /tmp/cmrc_base/predictions.json \
        --output /tmp/cmrc_base/eval --name gemma-3-270m-base

Writes ``evalset.json`` (context, question, answers, all_answers) and ``predictions.json`` to --out
(outside the repo: the data set is never copied into it).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from data_paths import data_file

TEMPLATE = ("Please use the original text of the following paragraph to answer the question\n\n"
            "### Known paragraph: {context}\n\n### Question: {question}\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None, help="CMRC2018 test file (default: $RAGTUNE_DATA_DIR/cmrc2018/test.json)")
    ap.add_argument("--n", type=int, default=50, help="first N test items")
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--out", default="/tmp/cmrc_base")
    args = ap.parse_args()

    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragtune.core.io import atomic_write_json
    from ragtune.core.prompt import build_prompt
    from ragtune.models import resolve_model
    from ragtune.models.device import resolve_dtype

    torch.set_num_threads(2)
    data = data_file("cmrc2018/test.json", flag="--data", explicit=args.data)
    rows = json.loads(data.read_text(encoding="utf-8"))[: args.n]
    evalset = [{"context": r["context"], "question": r["question"], "answers": r["answers"]["text"][0],
                "all_answers": list(dict.fromkeys(r["answers"]["text"]))} for r in rows]

    resolved = resolve_model(args.model)
    tok = AutoTokenizer.from_pretrained(resolved.path)
    tok.padding_side = "left"
    dtype = resolve_dtype("auto")
    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=dtype).eval()
    prompts = [build_prompt(tok, TEMPLATE.format(context=e["context"], question=e["question"])) for e in evalset]

    # Sort by length so each batch pads little; restore eval-set order afterwards.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    preds: dict[int, str] = {}
    n_new = 0
    t0 = time.perf_counter()
    for b in tqdm(range(0, len(order), args.batch_size), desc="generate", unit="batch"):
        idx = order[b: b + args.batch_size]
        # build_prompt gives text without BOS; the tokenizer adds it (add_bos_token) like encode_prompt.
        enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=False, max_new_tokens=args.max_new_tokens,
                                 pad_token_id=tok.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        n_new += int((new != tok.pad_token_id).sum())
        for i, seq in zip(idx, new):
            preds[i] = tok.decode(seq, skip_special_tokens=True).strip()
    secs = time.perf_counter() - t0

    out_dir = Path(args.out)
    atomic_write_json(out_dir / "evalset.json", evalset)
    atomic_write_json(out_dir / "predictions.json", [preds[i] for i in range(len(evalset))])
    atomic_write_json(out_dir / "generation_stats.json", {
        "model": args.model, "dtype": str(dtype), "n": len(evalset), "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens, "seconds": round(secs, 1), "generated_tokens": n_new,
        "prompt_chars_mean": sum(map(len, prompts)) / len(prompts)})
    print(f"{len(evalset)} predictions in {secs:.1f}s ({n_new} new tokens) -> {out_dir}")


if __name__ == "__main__":
    main()
