"""The chapter's CMRC2018 experiment on this CPU: gemma-3-270m base vs fine-tuned, span extraction.

    python benchmarks/cmrc_sft.py main  [--samples 2400] [--workdir /tmp/cmrc_sft]   # default recipe
    python benchmarks/cmrc_sft.py sweep [--samples 256]                              # recipe search
    python benchmarks/cmrc_sft.py report                                             # tables only

Data (never copied into the repo): ``--train`` (CMRC2018 train, 10142 rows) is shuffled with a fixed
seed and the first ``--samples`` become Alpaca records with the chapter's Chinese template (the one
ragtune's ``data convert --template-lang zh`` writes). The test set is a fixed, seeded sample of
``--test-n`` (200) items of ``--test`` (1002 rows); the sweep scores the first 100 of them.

Every run: ``rt.finetune.lora`` / ``rt.finetune.freeze`` in a child process (its peak RSS is the
training's), batched greedy inference with ragtune's builtin engine (the same prompt builder as
training), then ``ragtune eval llm`` metrics: exact (strict and lenient: any reference answer,
punctuation-insensitive), cosine (all-MiniLM-L6-v2; English-centric, so read it with care on
Chinese) and origin (jieba words, and character level). ``main`` also scores intermediate checkpoints,
which gives exact match against the number of training samples seen.

Everything lands in WORKDIR/<run>/result.json; ``report`` writes the markdown tables to --out.
"""
from __future__ import annotations

import argparse
import datetime
import json
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from data_paths import data_file

RESULTS = Path(__file__).parent / "results" / "cmrc_sft.md"
# The chapter's numbers (its table: exact / cosine / origin, in %).
CHAPTER = [("InternLM2-Chat-7B, base (chapter)", 2.10, 74.51, 5.19),
           ("InternLM2-Chat-7B, LoRA-tuned (chapter)", 39.72, 86.19, 94.91),
           ("DeepSeek-V3 (chapter)", 5.29, 74.85, 15.17)]

COMMON = {"per_device_train_batch_size": 4, "num_train_epochs": 1, "cutoff_len": 1024, "warmup_ratio": 0.03}
SWEEP = {
    "lora-r16-lr2e-4": {"method": "lora", "learning_rate": 2e-4, "lora_rank": 16, "lora_alpha": 32, **COMMON},
    "lora-r16-lr1e-3": {"method": "lora", "learning_rate": 1e-3, "lora_rank": 16, "lora_alpha": 32, **COMMON},
    "lora-r8-lr2e-4": {"method": "lora", "learning_rate": 2e-4, "lora_rank": 8, "lora_alpha": 16, **COMMON},
    "freeze-top2-lr1e-4": {"method": "freeze", "learning_rate": 1e-4, "freeze_trainable_layers": 2, **COMMON},
}
# The default recipe, chosen from the sweep (see benchmarks/results/cmrc_sft.md).
RECIPE = SWEEP["lora-r16-lr2e-4"]
SEED = 2026


# -- data ---------------------------------------------------------------------------------------------
def train_file(work: Path, train: Path, n: int) -> Path:
    """A seeded random ``n`` of CMRC train, as Alpaca records (chapter template, Chinese)."""
    from ragtune.data.squad import squad_to_alpaca

    full = work / "data" / "train_all.json"
    if not full.exists():
        squad_to_alpaca(train, full, template_lang="zh")
    out = work / "data" / f"train_{n}.json"
    if not out.exists():
        rows = json.loads(full.read_text(encoding="utf-8"))
        random.Random(SEED).shuffle(rows)
        out.write_text(json.dumps(rows[:n], ensure_ascii=False), encoding="utf-8")
    return out


def test_file(work: Path, test: Path, n: int) -> Path:
    from ragtune.data.squad import evalset

    full = work / "data" / "test_all.json"
    if not full.exists():
        evalset(test, full)
    out = work / "data" / f"test_{n}.json"
    if not out.exists():
        rows = json.loads(full.read_text(encoding="utf-8"))
        picked = sorted(random.Random(SEED).sample(range(len(rows)), min(n, len(rows))))
        out.write_text(json.dumps([rows[i] for i in picked], ensure_ascii=False, indent=1), encoding="utf-8")
    return out


# -- training (child process: clean peak RSS) ------------------------------------------------------------
def train(work: Path, name: str, data: Path, recipe: dict, save_every: int | None) -> dict:
    run = work / name
    result_file = run / "train_result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    shutil.rmtree(run / "finetune", ignore_errors=True)
    job = {"data": str(data), "output": str(run / "finetune"), "recipe": recipe, "save_every": save_every,
           "result": str(result_file)}
    run.mkdir(parents=True, exist_ok=True)
    (run / "job.json").write_text(json.dumps(job, indent=1))
    proc = subprocess.run([sys.executable, __file__, "_train", str(run / "job.json")])
    if proc.returncode != 0:
        raise SystemExit(f"training {name} failed (exit {proc.returncode}); log: {run / 'finetune' / 'train.log'}")
    return json.loads(result_file.read_text())


def _train_child(job_file: str) -> None:
    import ragtune as rt

    job = json.loads(Path(job_file).read_text())
    recipe = dict(job["recipe"])
    method = recipe.pop("method")
    extra = {"save_steps": job["save_every"], "save_total_limit": None} if job["save_every"] else {}
    t0 = time.perf_counter()
    res = getattr(rt.finetune, method).run("gemma-3-270m", job["data"], job["output"], merge=method != "lora",
                                           overwrite_output_dir=True, **recipe, **extra)
    m = res.metrics
    out = {"train_samples": m["train_samples"], "steps": m["steps"], "train_tokens": m["train_tokens"],
           "train_runtime_s": m["train_runtime_s"], "tokens_per_second": m["tokens_per_second"],
           "first_loss": m["first_loss"], "final_loss": m["final_loss"], "wall_s": round(time.perf_counter() - t0, 1),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "batch_size": recipe.get("per_device_train_batch_size", 1)}
    Path(job["result"]).write_text(json.dumps(out, indent=1))


# -- inference + metrics --------------------------------------------------------------------------------
def checkpoint_adapter(work: Path, name: str, step: int) -> str:
    """An adapter dir from checkpoint ``step`` of a LoRA run: the final adapter's config and
    tokenizer, that checkpoint's weights (peft saves them without the adapter name)."""
    from safetensors.torch import load_file, save_file

    run = work / name / "finetune"
    out = work / name / f"adapter-step-{step}"
    if (out / "adapter_model.safetensors").exists():
        return str(out)
    shutil.copytree(run / "adapter", out, dirs_exist_ok=True)
    weights = load_file(str(run / "checkpoints" / f"step-{step}" / "trainable.safetensors"))
    save_file({k.replace(".default.", "."): v.contiguous() for k, v in weights.items()},
              str(out / "adapter_model.safetensors"))
    return str(out)


def predict_and_score(work: Path, label: str, evalset: Path, model: str, adapter: str | None) -> dict:
    from ragtune.data.squad import TEMPLATES
    from ragtune.eval.runner import evaluate_llm
    from ragtune.infer.runner import InferConfig, run_infer

    target = work / "scores" / f"{label}__{evalset.stem}.json"
    if target.exists():
        return json.loads(target.read_text())
    preds = work / "predictions" / f"{label}__{evalset.stem}.json"
    preds.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run_infer(InferConfig(evalset=str(evalset), output=str(preds), model=model, adapter=adapter,
                          template=TEMPLATES["zh"], max_tokens=64, batch_size=16))
    infer_s = time.perf_counter() - t0
    main = evaluate_llm(evalset=str(evalset), predictions=str(preds), output=str(work / "evals"), name=label,
                        metrics=["exact", "cosine", "origin"], exact_mode="both", origin_tokenizer="jieba")
    char = evaluate_llm(evalset=str(evalset), predictions=str(preds), output=str(work / "evals"),
                        name=label + "-char", metrics=["origin"], origin_tokenizer="char")
    m = main.summary["metrics"]
    score = {"label": label, "n": main.summary["n_items"], "infer_s": round(infer_s, 1),
             "exact": m["exact"]["mean"], "exact_lenient": m["exact_lenient"]["mean"],
             "cosine": m["cosine"]["mean"], "origin": m["origin"]["mean"],
             "origin_char": char.summary["metrics"]["origin"]["mean"], "eval_dir": str(main.path)}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(score, indent=1))
    print(json.dumps(score), flush=True)
    return score


# -- commands -------------------------------------------------------------------------------------------
def first_100(work: Path, test: Path) -> Path:
    small = work / "data" / f"{test.stem}_first100.json"
    if not small.exists():
        small.write_text(json.dumps(json.loads(test.read_text(encoding="utf-8"))[:100], ensure_ascii=False))
    return small


def prepare(args) -> tuple[Path, Path, Path, Path]:
    """(workdir, train file, test sample, its first 100 items), with the base scored on the 100."""
    work = Path(args.workdir)
    data = train_file(work, data_file("cmrc2018/train.json", flag="--train", explicit=args.train), args.samples)
    test = test_file(work, data_file("cmrc2018/test.json", flag="--test", explicit=args.test), args.test_n)
    small = first_100(work, test)
    predict_and_score(work, "base", small, "gemma-3-270m", None)
    return work, data, test, small


def cmd_main(args) -> None:
    work, data, test, small = prepare(args)
    predict_and_score(work, "base", test, "gemma-3-270m", None)
    batch = RECIPE["per_device_train_batch_size"]
    every = max(1, args.curve_every // batch)
    name = f"main-{args.samples}"
    info = train(work, name, data, RECIPE, every)
    (work / name / "recipe.json").write_text(json.dumps(RECIPE, indent=1))
    predict_and_score(work, name, test, str(work / name / "finetune"), None)
    # the curve: checkpoints (and the final model) on the first 100 items of the sample
    predict_and_score(work, name, small, str(work / name / "finetune"), None)
    steps = sorted(int(p.name.split("-")[1]) for p in (work / name / "finetune" / "checkpoints").glob("step-*"))
    for step in steps[:-1]:
        predict_and_score(work, f"{name}@{step * batch}", small, "gemma-3-270m", checkpoint_adapter(work, name, step))
    print(json.dumps(info, indent=1))
    cmd_report(args)


def cmd_sweep(args) -> None:
    work, data, _, small = prepare(args)
    for name, recipe in SWEEP.items():
        if args.only and name not in args.only:
            continue
        run = f"sweep-{args.samples}-{name}"
        train(work, run, data, recipe, None)
        (work / run / "recipe.json").write_text(json.dumps(recipe, indent=1))
        predict_and_score(work, run, small, str(work / run / "finetune"), None)
    cmd_report(args)


def _pct(x) -> str:
    return f"{100 * x:.2f}"


def cmd_report(args) -> None:
    work = Path(args.workdir)
    scores = {p.stem: json.loads(p.read_text()) for p in sorted((work / "scores").glob("*.json"))}
    lines = ["# CMRC2018 span extraction: gemma-3-270m base vs fine-tuned (issue 9)", "",
             f"Date: {datetime.date.today()}. Machine: 2-core CPU (AVX512-BF16), 24 GiB, no GPU.  ",
             "Command: `python benchmarks/cmrc_sft.py main` (table 1, curve) and "
             "`python benchmarks/cmrc_sft.py sweep` (table 2). Metrics in %.", ""]
    main_runs = sorted({p.parent.name for p in work.glob("main-*/train_result.json")})
    test_stem = f"test_{args.test_n}"
    for run in main_runs:
        info = json.loads((work / run / "train_result.json").read_text())
        recipe = json.loads((work / run / "recipe.json").read_text())
        base = scores.get(f"base__{test_stem}")
        tuned = scores.get(f"{run}__{test_stem}")
        lines += [f"## {run}: {info['train_samples']} train samples, seeded {args.test_n}-item test sample", "",
                  f"Recipe: `{json.dumps(recipe)}`.  ",
                  f"Training: {info['train_runtime_s'] / 60:.1f} min, {info['train_tokens']} tokens, "
                  f"{info['tokens_per_second']:.0f} tokens/s, peak RSS {info['peak_rss_mb'] / 1024:.1f} GiB, "
                  f"loss {info['first_loss']:.3f} -> {info['final_loss']:.3f}.", "",
                  "| model | exact | exact (lenient) | cosine | origin (jieba) | origin (char) |",
                  "|---|---|---|---|---|---|"]
        for label, s in (("gemma-3-270m, base (ragtune)", base), ("gemma-3-270m, LoRA-tuned (ragtune)", tuned)):
            if s:
                lines.append(f"| {label} | {_pct(s['exact'])} | {_pct(s['exact_lenient'])} | {_pct(s['cosine'])} | "
                             f"{_pct(s['origin'])} | {_pct(s['origin_char'])} |")
        for label, e, c, o in CHAPTER:
            lines.append(f"| {label} | {e:.2f} | - | {c:.2f} | {o:.2f} | - |")
        small = f"{test_stem}_first100"
        curve = [(0, scores[f"base__{small}"])] if f"base__{small}" in scores else []
        curve += sorted(((int(k.split("@")[1].split("__")[0]), v) for k, v in scores.items()
                         if k.startswith(run + "@") and k.endswith(small)), key=lambda kv: kv[0])
        if f"{run}__{small}" in scores:
            curve.append((info["train_samples"], scores[f"{run}__{small}"]))
        if len(curve) > 1:
            lines += ["", "Exact match against training samples seen, on the first 100 items of the sample "
                      "(checkpoints of this run: the learning rate had not finished its cosine decay at the "
                      "intermediate ones; 0 = the base model):", "",
                      "| samples seen | exact | exact (lenient) | origin (char) |", "|---|---|---|---|"]
            lines += [f"| {n} | {_pct(s['exact'])} | {_pct(s['exact_lenient'])} | {_pct(s['origin_char'])} |"
                      for n, s in curve]
            _plot_curve(curve, Path(args.out).with_name(f"cmrc_sft_{run}_curve.png"))
            lines += ["", f"![exact vs samples](cmrc_sft_{run}_curve.png)"]
        lines.append("")
    sweep = sorted(p.parent.name for p in work.glob("sweep-*/train_result.json"))
    if sweep:
        lines += ["## Sweep (first 100 items of the test sample)", "",
                  "| run | train min | tokens/s | final loss | exact | exact (lenient) | cosine | origin (char) |",
                  "|---|---|---|---|---|---|---|---|"]
        base = next((v for k, v in scores.items() if k.startswith("base__") and k.endswith("_first100")), None)
        if base:
            lines.append(f"| base | - | - | - | {_pct(base['exact'])} | {_pct(base['exact_lenient'])} | "
                         f"{_pct(base['cosine'])} | {_pct(base['origin_char'])} |")
        for run in sweep:
            info = json.loads((work / run / "train_result.json").read_text())
            s = next((v for k, v in scores.items() if k.startswith(run + "__")), None)
            if s:
                lines.append(f"| {run} | {info['train_runtime_s'] / 60:.1f} | {info['tokens_per_second']:.0f} | "
                             f"{info['final_loss']:.3f} | {_pct(s['exact'])} | {_pct(s['exact_lenient'])} | "
                             f"{_pct(s['cosine'])} | {_pct(s['origin_char'])} |")
        lines.append("")
    text = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)


def _plot_curve(curve, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [n for n, _ in curve]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(xs, [100 * s["exact"] for _, s in curve], "o-", label="exact")
    ax.plot(xs, [100 * s["exact_lenient"] for _, s in curve], "s--", label="exact (lenient)")
    ax.plot(xs, [100 * s["origin_char"] for _, s in curve], "^:", label="origin (char)")
    ax.set_xlabel("training samples seen")
    ax.set_ylabel("%")
    ax.set_title("gemma-3-270m on CMRC2018 test sample")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_train":
        return _train_child(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["main", "sweep", "report"])
    ap.add_argument("--workdir", default="/tmp/cmrc_sft")
    ap.add_argument("--train", default=None, help="CMRC2018 train file (default: $RAGTUNE_DATA_DIR/cmrc2018/train.json)")
    ap.add_argument("--test", default=None, help="CMRC2018 test file (default: $RAGTUNE_DATA_DIR/cmrc2018/test.json)")
    ap.add_argument("--samples", type=int, default=None, help="training samples (main: 2400, sweep: 256)")
    ap.add_argument("--test-n", type=int, default=200)
    ap.add_argument("--curve-every", type=int, default=600, help="main: score a checkpoint every N samples")
    ap.add_argument("--only", nargs="*", help="sweep: only these recipes")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if args.samples is None:
        args.samples = 256 if args.command == "sweep" else 2400
    {"main": cmd_main, "sweep": cmd_sweep, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
