"""GGUF export round trip: a CMRC fine-tune of gemma-3-270m, served by llama.cpp after `ragtune
export` at f16 / q8_0 / q4_k_m, against the builtin engine on the same CMRC test items.

    python benchmarks/export_roundtrip.py --run out/cmrc-run --n 100        # an existing fine-tune output
    python benchmarks/export_roundtrip.py --train-samples 400 --n 100       # trains a LoRA first
    python benchmarks/export_roundtrip.py --train-samples 16 --max-steps 4 --n 5 --quants f16   # smoke
    python benchmarks/export_roundtrip.py --run out/cmrc-run --quants q8_0,q8_0:f16 --no-lora  # token_embd f16

For each quant the merged fine-tune is exported (``ExportConfig(model=RUN, quant=Q)``) and decoded
greedily by the llamacpp engine; the reference is the builtin engine on the merged weights, in fp32
(exact) and in its default dtype (``auto``: bf16 where the CPU has it, what ``ragtune serve``
runs). "Same answer" = the whole completion text is identical. The LoRA path is checked too: the
base exported at f16 plus the adapter as a GGUF LoRA must give the merged f16 export's answers.
CMRC EM / F1 are the official metrics (``cmrc_em`` / ``cmrc_f1``). Prompts: the Chinese chapter
template that ``ragtune data convert --template-lang zh`` trains with, through the shared prompt
builder. Test items: a seeded sample of CMRC test (the same seed as benchmarks/cmrc_sft.py).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

from data_paths import data_file

RESULTS = Path(__file__).parent / "results" / "export.md"
SEED = 2026


def test_items(path: Path, n: int) -> list[dict]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    picked = sorted(random.Random(SEED).sample(range(len(rows)), min(n, len(rows))))
    return [rows[i] for i in picked]


def train_run(work: Path, train: Path, samples: int, max_steps: int | None) -> Path:
    """A LoRA fine-tune (benchmarks/cmrc_sft.py's recipe) on a seeded sample of CMRC train."""
    import ragtune as rt
    from ragtune.data.squad import squad_to_alpaca

    out = work / f"run-{samples}"
    if (out / "ragtune_finetune.json").exists():
        return out
    full = work / "train_all.json"
    if not full.exists():
        squad_to_alpaca(train, full, template_lang="zh")
    rows = json.loads(full.read_text(encoding="utf-8"))
    random.Random(SEED).shuffle(rows)
    data = work / f"train_{samples}.json"
    data.write_text(json.dumps(rows[:samples], ensure_ascii=False), encoding="utf-8")
    extra = {"max_steps": max_steps} if max_steps else {}
    t0 = time.perf_counter()
    rt.finetune.lora.run("gemma-3-270m", str(data), str(out), merge=True, overwrite_output_dir=True,
                         learning_rate=2e-4, lora_rank=16, lora_alpha=32, per_device_train_batch_size=4,
                         num_train_epochs=1, cutoff_len=1024, warmup_ratio=0.03, **extra)
    print(f"trained {out} in {time.perf_counter() - t0:.0f}s", flush=True)
    return out


def score(items: list[dict], texts: list[str]) -> dict[str, float]:
    from ragtune.eval.base import EvalItem, get_metric

    em, f1 = get_metric("cmrc_em"), get_metric("cmrc_f1")
    evals = [EvalItem(question=it["question"], context=it["context"], reference=it["answers"]["text"][0],
                      all_answers=list(it["answers"]["text"]), prediction=t) for it, t in zip(items, texts)]
    ems = [r.value for r in em.score_batch(evals) if r.status == "ok"]
    f1s = [r.value for r in f1.score_batch(evals) if r.status == "ok"]
    return {"em": 100 * sum(ems) / len(ems), "f1": 100 * sum(f1s) / len(f1s)}


def same(a: list[str], b: list[str]) -> int:
    return sum(x == y for x, y in zip(a, b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=None, help="fine-tune output DIR (merged/ and adapter/); default: train one")
    ap.add_argument("--train", default=None, help="CMRC2018 train file (default: $RAGTUNE_DATA_DIR/cmrc2018/train.json)")
    ap.add_argument("--test", default=None, help="CMRC2018 test file (default: $RAGTUNE_DATA_DIR/cmrc2018/test.json)")
    ap.add_argument("--train-samples", type=int, default=400)
    ap.add_argument("--max-steps", type=int, default=None, help="cap the training (smoke runs)")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--quants", default="f16,q8_0,q4_k_m",
                    help="comma list; QUANT:TYPE keeps token_embd (gemma: also the output layer) at TYPE")
    ap.add_argument("--no-lora", action="store_true", help="skip the base + GGUF LoRA export")
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workdir", default="/tmp/export_roundtrip")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    from ragtune.data.squad import TEMPLATES, fill_template
    from ragtune.engine.base import SamplingParams
    from ragtune.engine.builtin import BuiltinEngine
    from ragtune.engine.llamacpp import LlamaCppEngine
    from ragtune.export.job import ExportConfig

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    run = Path(args.run) if args.run else train_run(work, data_file("cmrc2018/train.json", flag="--train", explicit=args.train), args.train_samples, args.max_steps)
    items = test_items(data_file("cmrc2018/test.json", flag="--test", explicit=args.test), args.n)
    prompts = [fill_template(TEMPLATES["zh"], it["context"], it["question"]) for it in items]
    params = SamplingParams(max_tokens=args.max_tokens)
    results: dict[str, dict] = {}

    for dtype in ("fp32", "auto"):
        engine = BuiltinEngine.load(str(run), dtype=dtype)
        if dtype == "auto" and str(engine.model.dtype) == "torch.float32":   # no bf16 on this CPU: same run
            results[f"builtin {dtype} (float32)"] = dict(results[list(results)[-1]])
            engine.close()
            break
        ids = [engine.encode_chat(p) for p in prompts]
        t0 = time.perf_counter()
        out = engine.generate_ids(ids, params)
        results[f"builtin {dtype} ({engine.model.dtype})".replace("torch.", "")] = {
            "texts": [c.text for c in out], "seconds": time.perf_counter() - t0, "bytes": None, "export_s": None}
        engine.close()
        print(f"builtin {dtype}: {results[list(results)[-1]]['seconds']:.0f}s", flush=True)
    ref32, ref_auto = (results[k]["texts"] for k in list(results)[:2])

    def llama(label: str, folder: Path, export_s: float, gguf: Path) -> None:
        engine = LlamaCppEngine.load(str(folder), slots=args.slots, threads=args.threads,
                                     max_model_len=max(len(x) for x in ids) + args.max_tokens)
        assert engine.encode_chat(prompts[0]) == ids[0], "llama.cpp engine built a different prompt"
        t0 = time.perf_counter()
        out = engine.generate_ids(ids, params)
        results[label] = {"texts": [c.text for c in out], "seconds": time.perf_counter() - t0,
                          "bytes": gguf.stat().st_size, "export_s": export_s}
        engine.close()
        print(f"{label}: same as builtin fp32 {same(results[label]['texts'], ref32)}/{len(ids)}", flush=True)

    for spec in args.quants.split(","):
        quant, _, embedding = spec.partition(":")
        t0 = time.perf_counter()
        res = ExportConfig(model=str(run), output=str(work / f"gguf-{spec.replace(':', '-emb-')}"), quant=quant,
                           token_embedding_type=embedding or None).execute()
        label = f"llama.cpp {quant}" + (f", token_embd {embedding}" if embedding else "") + " (merged)"
        llama(label, res.output, time.perf_counter() - t0, res.model_file)
    if not args.no_lora:
        t0 = time.perf_counter()
        lora = ExportConfig(model=str(run), output=str(work / "gguf-f16-lora"), quant="f16", lora=True).execute()
        llama("llama.cpp f16 base + GGUF LoRA", lora.output, time.perf_counter() - t0, lora.adapter_file)

    n = len(items)
    lines = [f"Fine-tune: `{run}`; {n} CMRC test items (seed {SEED}), {args.max_tokens} new tokens greedy, "
             f"llama.cpp {args.slots} slots, threads {args.threads or 'all'}; load {os.getloadavg()[0]:.1f}; "
             f"{time.strftime('%Y-%m-%d')}.", "",
             "| engine / export | file MB | export s | same answer as builtin fp32 | as builtin auto | CMRC EM | CMRC F1 | items/s |",
             "|---|---|---|---|---|---|---|---|"]
    for label, r in results.items():
        s = score(items, r["texts"])
        mb = f"{r['bytes'] / 1e6:.0f}" if r["bytes"] else "-"
        ex = f"{r['export_s']:.0f}" if r["export_s"] is not None else "-"
        lines.append(f"| {label} | {mb} | {ex} | {same(r['texts'], ref32)}/{n} | {same(r['texts'], ref_auto)}/{n} "
                     f"| {s['em']:.1f} | {s['f1']:.1f} | {n / r['seconds']:.3f} |")
    merged16 = results.get("llama.cpp f16 (merged)")
    if merged16 and "llama.cpp f16 base + GGUF LoRA" in results:
        lines += ["", f"LoRA export vs merged export (both f16, llama.cpp): "
                      f"{same(results['llama.cpp f16 base + GGUF LoRA']['texts'], merged16['texts'])}/{n} same answers."]
    table = "\n".join(lines)
    print(table)
    (work / "answers.json").write_text(json.dumps({k: v["texts"] for k, v in results.items()}, ensure_ascii=False,
                                                  indent=1), encoding="utf-8")
    if args.out:
        out = Path(args.out)
        head = "" if out.exists() else "# GGUF export round trip (issue 16)\n\nCommand: see benchmarks/export_roundtrip.py.\n"
        with open(out, "a", encoding="utf-8") as fh:
            fh.write(head + "\n" + table + "\n")


if __name__ == "__main__":
    main()
