"""Training throughput: ragtune's LoRA trainer vs Hugging Face Trainer + PEFT (what LLaMA-Factory/TRL run).

Setup (issue 4): gemma-3-270m (bundled), the first N (default 64) CMRC2018 train samples converted with
the chapter's span-extraction template, LoRA r=8 on all linear layers, 1 epoch, batch 1, same
tokenized samples and label masking for every variant. Baseline = HF Trainer at fp32 and at bf16; the
faster is the baseline. Each variant runs in its own process (clean peak RSS).

    python benchmarks/train_throughput.py [--samples 64] [--out benchmarks/results/finetune.md]

MFU = task FLOPs / time / measured matmul peak (bf16 where the CPU has it natively, else fp32). Task FLOPs per sample (LoRA, frozen base):
4 * N_body * seq_len (forward + activation-gradient backward through every frozen linear layer) +
4 * vocab * hidden * answer_tokens (the output projection where the loss needs it); attention
score FLOPs and the LoRA matrices are left out (<5% at these lengths). The same FLOP count is used for
every variant, so full-vocabulary logits at every position count as waste, not as useful work.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_paths import data_file

# The chapter's template (its Chinese original, since CMRC2018 is Chinese).
TEMPLATE = "请用下面的段落的原文来回答问题\n\n### 已知段落：{context}\n\n### 问题：{question}\n"
CUTOFF = 1024


def build_data(n: int, path: Path) -> Path:
    src = data_file("cmrc2018/train.json", flag="CMRC_TRAIN", explicit=os.environ.get("CMRC_TRAIN"))
    rows = json.loads(src.read_text(encoding="utf-8"))[:n]
    data = [{"instruction": TEMPLATE.format(context=r["context"], question=r["question"]), "input": "",
             "output": r["answers"]["text"][0]} for r in rows]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def samples(model_dir: str, data: Path):
    from transformers import AutoTokenizer

    from ragtune.core.prompt import PromptConfig
    from ragtune.finetune.llm.data import tokenized_dataset

    tok = AutoTokenizer.from_pretrained(model_dir)
    return tokenized_dataset(data, tok, model_dir, PromptConfig(), CUTOFF, use_cache=False)[0], tok


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


BASELINES = ("hf-fp32", "hf-fp32-eager", "hf-bf16", "hf-bf16-eager")


# -- variants (each in a child process) ----------------------------------------------------------------
def run_ragtune(model_dir: str, data: Path, fast_lora: bool = True, packed: bool = False) -> dict:
    """Unpacked: the same tokens as the baselines (the like-for-like speed). Packed: records that share
    a passage train as one sequence (the passage once), so the same records cost fewer tokens:
    compare records/s."""
    import ragtune as rt

    with tempfile.TemporaryDirectory() as out:
        res = rt.finetune.lora.run(model_dir, str(data), out + "/run", lora_rank=8, lora_alpha=16, lora_target="all",
                                   num_train_epochs=1, per_device_train_batch_size=1, cutoff_len=CUTOFF,
                                   learning_rate=1e-4, merge=False, tokenize_cache=False, dtype="auto",
                                   fast_lora=fast_lora, pack_shared_prefix=packed, save_minutes=None)
    m = res.metrics
    losses = [h["loss"] for h in m["history"] if "loss" in h]
    # mean over all steps, like HF Trainer's training_loss
    return {"seconds": m["train_runtime_s"], "tokens": m["train_tokens"], "dtype": m["dtype"],
            "final_loss": sum(losses) / len(losses), "records": m["train_samples"],
            "sequences": m["train_sequences"]}


def run_hf_trainer(model_dir: str, data: Path, bf16: bool, attn: str = "sdpa") -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    train, tok = samples(model_dir, data)
    rows = [{"input_ids": s.input_ids, "attention_mask": [1] * len(s), "labels": s.labels} for s in train]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if bf16 else torch.float32,
                                                 attn_implementation=attn)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=1, num_train_epochs=1,
                                 learning_rate=1e-4, lr_scheduler_type="cosine", logging_steps=10_000,
                                 save_strategy="no", report_to=[], use_cpu=True, bf16=bf16,
                                 dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=rows,
                          data_collator=DataCollatorForSeq2Seq(tok, padding=True))
        start = time.perf_counter()
        out_metrics = trainer.train()
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": sum(len(r["input_ids"]) for r in rows),
            "dtype": ("bf16" if bf16 else "fp32") + f", {attn}", "final_loss": out_metrics.training_loss}


def matmul_peak(dtype_name: str, n: int = 2048, reps: int = 20) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t))
    return best / 1e9


def task_flops(model_dir: str, data: Path) -> float:
    import torch
    from transformers import AutoConfig

    from ragtune.finetune.llm.batching import labelled_tokens
    from ragtune.finetune.llm.methods import meta_model

    cfg = AutoConfig.from_pretrained(model_dir)
    model = meta_model(model_dir)
    body = sum(m.weight.numel() for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and m is not model.get_output_embeddings())
    train, _ = samples(model_dir, data)
    head = cfg.vocab_size * cfg.hidden_size
    return sum(4 * body * len(s) + 4 * head * labelled_tokens(s) for s in train)


def child(variant: str, model_dir: str, data: Path, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    if variant.startswith("ragtune"):
        result = run_ragtune(model_dir, data, fast_lora=variant != "ragtune-peft", packed=variant == "ragtune-packed")
    elif variant.startswith("hf-"):
        # hf-fp32 / hf-bf16 (transformers' default SDPA attention) and their -eager twins: the baseline
        # gets the attention kernel ragtune picks too, so the ratio is not an attention artefact.
        result = run_hf_trainer(model_dir, data, bf16=variant.startswith("hf-bf16"),
                                attn="eager" if variant.endswith("-eager") else "sdpa")
    elif variant == "peak":
        from ragtune.models.device import cpu_has_native_bf16

        # without native bf16 (AVX2 CPUs) torch emulates it: minutes per matmul, and every variant
        # trains in fp32 there anyway, so MFU is taken against the fp32 peak
        native = cpu_has_native_bf16()
        fp32 = matmul_peak("float32")
        bf16 = matmul_peak("bfloat16") if native else None
        result = {"fp32_gflops": fp32, "bf16_gflops": bf16, "peak_gflops": bf16 or fp32,
                  "peak_dtype": "bf16" if native else "fp32", "task_flops": task_flops(model_dir, data)}
    result["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(result), flush=True)


def cpu_description() -> str:
    """Cores and whether bf16 is native (it decides ragtune's dtype auto and the bf16 baselines' speed)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"{os.cpu_count()}-core CPU"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "CPU")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    bf16 = "native bf16 (AVX512-BF16/AMX)" if flags & {"avx512_bf16", "amx_bf16"} else \
        ("AVX512, no bf16" if "avx512f" in flags else "AVX2, no native bf16")
    return f"{os.cpu_count()}-core {name}, {bf16}"


def run_child(variant: str, model_dir: str, data: Path, threads: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", variant, "--model", model_dir, "--data", str(data),
                           "--threads", str(threads)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"variant {variant} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    print(variant, result, file=sys.stderr, flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "finetune.md"))
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads per variant (1 on a box other jobs share: idle threads spin-wait)")
    ap.add_argument("--baselines", default=",".join(BASELINES),
                    help="HF variants to run (bf16 ones are slow on CPUs without native bf16: skip them there)")
    ap.add_argument("--child")
    ap.add_argument("--model")
    ap.add_argument("--data")
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.model, Path(args.data), args.threads)

    from ragtune.models import resolve_model

    model_dir = str(resolve_model("gemma-3-270m").path)
    data = build_data(args.samples, Path(tempfile.mkdtemp()) / "cmrc_train.json")
    load_before = os.getloadavg()
    peak = run_child("peak", model_dir, data, args.threads)
    baselines = tuple(b for b in args.baselines.split(",") if b)
    unknown = set(baselines) - set(BASELINES)
    if unknown or not baselines:
        raise SystemExit(f"--baselines: unknown {sorted(unknown)} (choose from {', '.join(BASELINES)})")
    results = {v: run_child(v, model_dir, data, args.threads)
               for v in ("ragtune", "ragtune-peft", "ragtune-packed", *baselines)}
    load_after = os.getloadavg()
    for r in results.values():
        r["tok_s"] = r["tokens"] / r["seconds"]
        r["records_s"] = args.samples / r["seconds"]
        r["mfu"] = peak["task_flops"] / r["seconds"] / (peak["peak_gflops"] * 1e9)
    base_name = max(baselines, key=lambda v: results[v]["tok_s"])
    ratio = results["ragtune"]["tok_s"] / results[base_name]["tok_s"]
    lines = [
        "# Fine-tuning throughput (issue 4)", "",
        f"Command: `python benchmarks/train_throughput.py --samples {args.samples} --threads {args.threads}`  ",
        f"Date: {datetime.date.today()}. Machine: {cpu_description()}, 24 GiB "
        f"(load average {load_before[0]:.1f} before, {load_after[0]:.1f} after).  ",
        f"Setup: gemma-3-270m, {args.samples} CMRC2018 train samples (chapter template), LoRA r=8 all linear, "
        f"1 epoch, batch 1, cutoff {CUTOFF}; {results['ragtune']['tokens']} tokens per variant.  ",
        f"Measured matmul peak: fp32 {peak['fp32_gflops']:.0f} GFLOP/s, bf16 "
        + (f"{peak['bf16_gflops']:.0f} GFLOP/s" if peak["bf16_gflops"] else "not native (emulated; not measured)")
        + f" (2048x2048, best of 3, {args.threads} thread(s)).", "",
        f"| variant | dtype | records/s | tokens/s | time (s) | peak RSS (MB) | mean train loss | MFU (vs {peak['peak_dtype']} peak) |",
        "|---|---|---|---|---|---|---|---|"]
    names = {"ragtune": "ragtune LoRA (answer-only lm_head + fast LoRA)",
             "ragtune-peft": "ragtune, peft's LoRA forward (fast_lora=False)",
             "ragtune-packed": "ragtune LoRA, shared-context packing (passage once per group)",
             **{b: "HF Trainer + PEFT" for b in baselines}}
    for v, r in results.items():
        mfu = "—" if v == "ragtune-packed" else f"{100 * r['mfu']:.1f}%"   # it does less work for the same records
        lines.append(f"| {names[v]}{' (baseline)' if v == base_name else ''} | {r['dtype']} | {r['records_s']:.3f} | "
                     f"{r['tok_s']:.1f} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['final_loss']:.3f} | {mfu} |")
    packed = results["ragtune-packed"]
    lines += ["", f"**Speed-up vs the faster baseline ({base_name}): {ratio:.2f}x** "
              f"(target >= 2x, goal >= 3x), same tokens.",
              f"**Shared-context packing: {packed['records_s'] / results['ragtune']['records_s']:.2f}x records/s vs "
              f"unpacked ragtune** ({packed['records']} records in {packed['sequences']} sequences; target >= 2.5x), "
              f"{packed['records_s'] / results[base_name]['records_s']:.2f}x the baseline.", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
