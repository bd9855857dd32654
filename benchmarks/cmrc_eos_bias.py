"""Answer-length calibration on CMRC2018: where do a tuned model's misses go wrong (span too long, too
short, shifted, elsewhere), and does an EOS logit bias (OpenAI's ``logit_bias`` on the end tokens),
chosen on held-out TRAIN passages, move exact match on the test sample?

    python benchmarks/cmrc_eos_bias.py --config benchmarks/cmrc/main.yaml [--biases -2,-1,0,1,2,3,4]

After ``ragtune run CONFIG``: the dev items are the run's own held-out records (val_size, whole
passages: never trained on), the test items its prepare_data eval set (the seeded 200). The bias is
picked on dev only (best exact, ties to the smaller |bias|), then applied once to test beside bias 0.
Greedy, the run's dev_max_tokens, the builtin engine, the chat template and stop markers of
``ragtune infer``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path


def run_items(cfg_path: str):
    """(finetune config, tuned model dir, dev items, test items) of a finished ``ragtune run``."""
    from transformers import AutoTokenizer

    from ragtune.data.squad import TEMPLATES
    from ragtune.finetune.llm import dev
    from ragtune.finetune.llm.data import held_out_indices, load_conversations, tokenized_dataset
    from ragtune.models import resolve_model
    from ragtune.workflow.run import RunConfig, build_stages

    cfg = RunConfig.from_yaml(cfg_path)
    ft = next(s for s in build_stages(cfg) if s.name == "finetune_llm").job.config
    model_dir = str(resolve_model(str(ft.base), "llm").path)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    samples, _ = tokenized_dataset(ft.train, tokenizer, model_dir, ft.prompt_config(), ft.cutoff_len,
                                   ft.max_samples, ft.tokenize_cache)
    held = held_out_indices(samples, ft.val_size, ft.seed, ft.val_split, ft.pack_min_prefix)
    convs = load_conversations(str(ft.train), ft.max_samples)
    dev_items = dev.from_conversations([convs[i] for i in held])
    test_file = Path(cfg.run_dir) / "prepare_data" / "eval.json"
    test_items = dev.from_eval_file(str(test_file), TEMPLATES[cfg.data.template_lang or "zh"])
    return ft, str(ft.output), dev_items, test_items


def decode(engine, items, max_tokens: int, bias: float) -> list[str]:
    from dataclasses import replace

    from ragtune.engine.base import SamplingParams

    ids = [engine.encode_chat(it.prompt) for it in items]
    params = engine.chat_params(SamplingParams(max_tokens=max_tokens))
    if bias:
        params = replace(params, logit_bias=tuple((t, bias) for t in sorted(engine.eos_ids)))
    return [o.text.strip() for o in engine.generate_ids(ids, params)]


def scores(items, preds: list[str]) -> dict[str, float]:
    from ragtune.eval.base import EvalItem, aggregate, get_metric

    scored = [EvalItem(question="", context=it.context, reference=it.reference, prediction=p,
                       all_answers=it.answers) for it, p in zip(items, preds)]
    out = {name: float(aggregate(get_metric(name).score_batch(scored)).mean or 0.0)
           for name in ("exact", "cmrc_em", "cmrc_f1")}
    out["chars"] = sum(len(p) for p in preds) / max(1, len(preds))
    return out


def miss_kind(pred: str, answers: list[str]) -> str:
    """How a prediction relates to its closest reference: the boundary errors a length bias can fix."""
    if pred in answers:
        return "exact"
    if any(a in pred for a in answers):
        return "too long (contains the answer)"
    if any(pred and pred in a for a in answers):
        return "too short (inside the answer)"
    if any(set(pred) & set(a) for a in answers):
        return "overlapping / shifted"
    return "elsewhere"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="the run YAML (its run must be finished)")
    ap.add_argument("--biases", default="-2,-1,0,1,2,3,4")
    ap.add_argument("--dev-items", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cmrc_eos_bias.md"))
    args = ap.parse_args()
    import torch

    from ragtune.engine.builtin import BuiltinEngine

    torch.set_num_threads(args.threads)
    ft, model, dev_items, test_items = run_items(args.config)
    dev_items = dev_items[: args.dev_items]
    engine = BuiltinEngine.load(model)
    max_tokens = ft.dev_max_tokens
    biases = [float(b) for b in args.biases.split(",")]
    load_before = os.getloadavg()
    dev_rows, kinds = {}, {}
    for bias in biases:
        start = time.perf_counter()
        preds = decode(engine, dev_items, max_tokens, bias)
        dev_rows[bias] = {**scores(dev_items, preds), "seconds": time.perf_counter() - start}
        kinds[bias] = Counter(miss_kind(p, it.answers) for p, it in zip(preds, dev_items))
        print("dev", bias, dev_rows[bias], dict(kinds[bias]), file=sys.stderr, flush=True)
    chosen = max(biases, key=lambda b: (round(dev_rows[b]["exact"], 6), -abs(b)))
    test_rows, test_kinds = {}, {}
    for bias in sorted({0.0, chosen}):
        preds = decode(engine, test_items, max_tokens, bias)
        test_rows[bias] = scores(test_items, preds)
        test_kinds[bias] = Counter(miss_kind(p, it.answers) for p, it in zip(preds, test_items))
        print("test", bias, test_rows[bias], dict(test_kinds[bias]), file=sys.stderr, flush=True)
    order = ["exact", "too long (contains the answer)", "too short (inside the answer)", "overlapping / shifted",
             "elsewhere"]
    lines = ["# CMRC2018: answer-length calibration with an EOS logit bias", "",
             f"Command: `python benchmarks/cmrc_eos_bias.py {' '.join(sys.argv[1:])}`  ",
             f"Date: {datetime.date.today()}; load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} "
             f"after (2-core CPU). Model: {model}. Greedy, max_tokens {max_tokens}; the bias is added to the "
             f"logits of the end tokens {sorted(engine.eos_ids)} at every step.", "",
             f"Dev: {len(dev_items)} held-out train records (whole passages, never trained on). Metrics in %; "
             "the miss columns count items (best over all references).", "",
             "| EOS bias | exact | CMRC EM | CMRC F1 | mean answer chars | " + " | ".join(order[1:]) + " |",
             "|---|---|---|---|---|" + "---|" * (len(order) - 1)]
    for bias in biases:
        r = dev_rows[bias]
        lines.append(f"| {bias:+g} | {100 * r['exact']:.2f} | {100 * r['cmrc_em']:.2f} | {100 * r['cmrc_f1']:.2f} | "
                     f"{r['chars']:.1f} | " + " | ".join(str(kinds[bias][k]) for k in order[1:]) + " |")
    lines += ["", f"Chosen on dev: {chosen:+g}. Test: the run's {len(test_items)} seeded test items.", "",
              "| EOS bias | exact | CMRC EM | CMRC F1 | mean answer chars | " + " | ".join(order[1:]) + " |",
              "|---|---|---|---|---|" + "---|" * (len(order) - 1)]
    for bias, r in test_rows.items():
        lines.append(f"| {bias:+g} | {100 * r['exact']:.2f} | {100 * r['cmrc_em']:.2f} | {100 * r['cmrc_f1']:.2f} | "
                     f"{r['chars']:.1f} | " + " | ".join(str(test_kinds[bias][k]) for k in order[1:]) + " |")
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"dev": {str(b): r for b, r in dev_rows.items()}, "test": {str(b): r for b, r in test_rows.items()},
         "chosen": chosen}, indent=2), encoding="utf-8")
    print(Path(args.out).read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
