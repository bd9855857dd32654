"""The chapter's structured-output use case: free-text clinic notes -> one JSON record, on
gemma-3-270m, base vs fine-tuned vs fine-tuned with `augment-json` noise, with and without
schema-constrained decoding, scored on clean and on corrupted inputs.

    python benchmarks/structured_output.py [--train-n 400] [--test-n 100] [--workdir /tmp/structured_output]
    python benchmarks/structured_output.py --train-n 16 --max-steps 2 --test-n 4 --max-tokens 48   # smoke

Data: ``ragtune.data.records`` (a generator in this project, like the demo's manuals: fictional
patients, vitals with units, made-up drugs, a lab system's JSON export inside each note; never
seen by any pre-trained model). Train and test come from one seeded stream, disjoint.
- clean test: the notes as generated;
- corrupted test: the test notes that carry a lab export, each with that JSON corrupted by
  ``ragtune data augment-json`` (fraction 1.0: dropped quotes/brackets, trailing commas, single
  quotes, truncation ...); the target JSON stays clean (read it and repair it).
Models: ``base`` (no training), ``tuned`` (LoRA on the clean train set), ``tuned+noise`` (LoRA on the
same set with 25% of the records' lab JSON corrupted by augment-json, the chapter's 20-30% noise
recipe); ``+schema`` rows decode with ``response_format: json_schema`` (the record schema) through
the builtin engine's constrained decoder. Metrics: ``json_valid``, ``json_schema_valid`` (the record
schema), ``json_field_f1`` (leaf fields, exact numbers, unordered lists).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "structured_output.md"
ROWS = ("base", "base+schema", "tuned", "tuned+noise", "tuned+noise+schema")


def make_data(work: Path, train_n: int, test_n: int) -> dict[str, Path]:
    from ragtune.data.augment import AugmentJsonConfig, augment_json
    from ragtune.data.records import generate_records

    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    files = {k: data / f"{k}.json" for k in ("train", "train_noise", "test", "test_corrupted")}
    if all(f.exists() for f in files.values()):
        return files
    rows = generate_records(train_n + test_n, seed=0)
    train, test = rows[:train_n], rows[train_n:]
    files["train"].write_text(json.dumps(train, ensure_ascii=False), encoding="utf-8")
    files["test"].write_text(json.dumps(test, ensure_ascii=False), encoding="utf-8")
    augment_json(files["train"], files["train_noise"], AugmentJsonConfig(fraction=0.25, seed=1))
    with_labs = data / "test_with_labs.json"
    with_labs.write_text(json.dumps([r for r in test if "{" in r["input"]], ensure_ascii=False), encoding="utf-8")
    augment_json(with_labs, files["test_corrupted"], AugmentJsonConfig(fraction=1.0, seed=2))
    return files


def train(work: Path, name: str, data: Path, max_steps: int | None) -> Path:
    import ragtune as rt

    out = work / name
    if (out / "ragtune_finetune.json").exists():
        return out
    extra = {"max_steps": max_steps} if max_steps else {}
    t0 = time.perf_counter()
    res = rt.finetune.lora.run("gemma-3-270m", str(data), str(out), merge=False, overwrite_output_dir=True,
                               learning_rate=2e-4, lora_rank=16, lora_alpha=32, per_device_train_batch_size=4,
                               num_train_epochs=2, cutoff_len=1024, warmup_ratio=0.03,
                               # every record shares only the instruction (~60 tokens): packing saves
                               # ~10% of tokens here, and with batch 4 its packs took 22 GB (OOM) on the box
                               pack_shared_prefix=False, **extra)
    m = res.metrics
    (out / "bench_train.json").write_text(json.dumps({
        "wall_s": round(time.perf_counter() - t0, 1), "train_tokens": m.get("train_tokens"),
        "tokens_per_second": m.get("tokens_per_second"), "final_loss": m.get("final_loss")}))
    return out


def predict(engine, rows: list[dict], max_tokens: int, constrained: bool) -> tuple[list[str], float]:
    from ragtune.data.records import record_schema
    from ragtune.engine.base import SamplingParams
    from ragtune.engine.constrained import parse_response_format
    from ragtune.infer.runner import item_input

    fmt = parse_response_format({"type": "json_schema", "json_schema": {"name": "record", "schema": record_schema()}}) \
        if constrained else None
    ids = [engine.encode_chat(item_input(r, None)[1]) for r in rows]  # alpaca: instruction + "\n" + input
    t0 = time.perf_counter()
    out = engine.generate_ids(ids, SamplingParams(max_tokens=max_tokens, response_format=fmt))
    return [c.text for c in out], time.perf_counter() - t0


def scores(rows: list[dict], preds: list[str]) -> dict[str, float]:
    from ragtune.data.records import record_schema
    from ragtune.eval.base import EvalItem, get_metric

    items = [EvalItem(reference=r["output"], prediction=p) for r, p in zip(rows, preds)]
    out = {}
    for key, metric in (("valid", get_metric("json_valid")),
                        ("schema", get_metric("json_schema_valid", json_schema=record_schema())),
                        ("f1", get_metric("json_field_f1"))):
        vals = [r.value for r in metric.score_batch(items)]
        out[key] = 100 * sum(vals) / len(vals)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-n", type=int, default=400)
    ap.add_argument("--test-n", type=int, default=100)
    ap.add_argument("--max-steps", type=int, default=None, help="cap training (smoke runs)")
    ap.add_argument("--max-tokens", type=int, default=320)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--workdir", default="/tmp/structured_output")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--redo", action="store_true", help="decode again even where WORKDIR/predictions has the row")
    args = ap.parse_args()

    from ragtune.engine.builtin import BuiltinEngine

    work = Path(args.workdir)
    files = make_data(work, args.train_n, args.test_n)
    sets = {"clean": json.loads(files["test"].read_text(encoding="utf-8")),
            "corrupted": json.loads(files["test_corrupted"].read_text(encoding="utf-8"))}
    wanted = args.rows.split(",")
    runs = {"base": None}
    if any(r.startswith("tuned") and "noise" not in r for r in wanted):
        runs["tuned"] = train(work, "tuned", files["train"], args.max_steps)
    if any("noise" in r for r in wanted):
        runs["tuned+noise"] = train(work, "tuned-noise", files["train_noise"], args.max_steps)
    table: dict[str, dict] = {}
    for model_key, run in runs.items():
        engine = BuiltinEngine.load(str(run) if run else "gemma-3-270m")
        for row in [r for r in wanted if r.removesuffix("+schema") == model_key]:
            table[row] = {}
            for set_name, rows in sets.items():
                pred_file = work / "predictions" / f"{row}__{set_name}.json"
                cached = None if args.redo or not pred_file.exists() else json.loads(pred_file.read_text(encoding="utf-8"))
                if cached is not None and len(cached) == len(rows):  # a finished row of an earlier (cut) run
                    table[row][set_name] = {**scores(rows, cached), "s": None}
                    print(row, set_name, "(from", pred_file, ")", json.dumps(table[row][set_name]), flush=True)
                    continue
                preds, secs = predict(engine, rows, args.max_tokens, row.endswith("+schema"))
                table[row][set_name] = {**scores(rows, preds), "s": secs}
                pred_file.parent.mkdir(parents=True, exist_ok=True)
                pred_file.write_text(json.dumps(preds, ensure_ascii=False, indent=1), encoding="utf-8")
                print(row, set_name, json.dumps(table[row][set_name]), flush=True)
        engine.close()
    train_info = {k: json.loads((v / "bench_train.json").read_text()) for k, v in runs.items()
                  if v is not None and (v / "bench_train.json").exists()}
    n_clean, n_bad = len(sets["clean"]), len(sets["corrupted"])
    lines = [f"{args.train_n} train / {n_clean} clean test / {n_bad} corrupted test records, max_tokens "
             f"{args.max_tokens}, greedy; load {os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d')}. Training: "
             + "; ".join(f"{k}: {v['wall_s']:.0f} s, final loss {v['final_loss']}" for k, v in train_info.items()), "",
             "| model | clean: JSON valid | schema valid | field F1 | corrupted: JSON valid | schema valid | field F1 |",
             "|---|---|---|---|---|---|---|"]
    for row, res in table.items():
        c, b = res["clean"], res["corrupted"]
        lines.append(f"| {row} | {c['valid']:.1f}% | {c['schema']:.1f}% | {c['f1']:.1f} | {b['valid']:.1f}% "
                     f"| {b['schema']:.1f}% | {b['f1']:.1f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        head = "" if out.exists() else "# Structured output: clinic notes -> JSON (issue 16)\n\nSee benchmarks/structured_output.py.\n"
        with open(out, "a", encoding="utf-8") as fh:
            fh.write(head + "\n" + text + "\n")


if __name__ == "__main__":
    main()
