"""A real SIGTERM on a real run (issue 14): gemma-3-270m LoRA on CMRC2018, killed with SIGTERM after
--kill-after seconds (Slurm's and Kubernetes' stop signal), rerun with --resume, against the same run
never stopped.

    python benchmarks/sigterm_resume.py [--records 480] [--max-steps 30] [--kill-after 300]

One process at a time (2 cores): the reference run, then the killed run, then its resume. Writes
benchmarks/results/sigterm_resume.md and sigterm_resume.png (both loss curves). The test suite checks
the same on a tiny model step for step (tests/finetune/test_sigterm_resume.py); this is the one real
run the issue asks for, with the library's default checkpoint interval (save_minutes 10).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_paths import data_file

RESULTS = Path(__file__).parent / "results"


def build_data(records: int, work: Path) -> Path:
    from ragtune.data.squad import squad_to_alpaca

    src = data_file("cmrc2018/train.json", flag="CMRC_TRAIN", explicit=os.environ.get("CMRC_TRAIN"))
    subset = work / "cmrc_train_subset.json"
    rows = json.loads(src.read_text(encoding="utf-8"))
    subset.write_text(json.dumps(rows[:records], ensure_ascii=False), encoding="utf-8")
    out = work / "train.json"
    squad_to_alpaca(subset, out, template_lang="zh")
    return out


def command(train: Path, out: Path, args: argparse.Namespace, *extra: str) -> list[str]:
    # The main.yaml recipe (LoRA r16 all-linear, lr 2e-4, batch 4, cutoff 1024, shared-context packing)
    # for a fixed number of steps, so that both runs have the same plan.
    return [sys.executable, "-m", "ragtune.cli", "finetune", "llm", "--base", args.model, "--train", str(train),
            "--output", str(out), "--max-steps", str(args.max_steps), "--per-device-train-batch-size", "4",
            "--cutoff-len", "1024", "--learning-rate", "2e-4", "--lora-rank", "16", "--lora-alpha", "32",
            "--val-size", "0", "--logging-steps", "1", *extra]


def losses(out: Path) -> dict[int, float]:
    history = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["history"]
    return {h["step"]: h["loss"] for h in history if "loss" in h}


def timed(cmd: list[str], log: Path) -> tuple[int, float]:
    start = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - start


def killed(cmd: list[str], log: Path, after: float) -> tuple[int, float]:
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=after)
            raise SystemExit(f"the run ended before the kill at {after:.0f} s: raise --max-steps")
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=600)
    return rc, time.perf_counter() - start


def plot(ref: dict[int, float], resumed: dict[int, float], stopped_at: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(list(ref), list(ref.values()), label="never stopped", lw=2)
    ax.plot(list(resumed), list(resumed.values()), "--", label="SIGTERM + --resume", lw=2)
    ax.axvline(stopped_at + 0.5, color="grey", lw=1, ls=":", label=f"SIGTERM after step {stopped_at}")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--records", type=int, default=480)
    ap.add_argument("--max-steps", type=int, default=30)
    ap.add_argument("--kill-after", type=float, default=300.0, help="seconds after the start")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="sigterm_resume_"))
    work.mkdir(parents=True, exist_ok=True)
    train = build_data(args.records, work)
    load_before = os.getloadavg()[0]

    ref_out, run_out = work / "ref", work / "run"
    rc, ref_s = timed(command(train, ref_out, args), work / "ref.log")
    if rc != 0:
        raise SystemExit(f"reference run failed (rc {rc}): see {work / 'ref.log'}")
    rc_kill, kill_s = killed(command(train, run_out, args), work / "run.log", args.kill_after)
    said = [ln for ln in (work / "run.log").read_text().splitlines() if "SIGTERM" in ln]
    ckpts = sorted((run_out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    if rc_kill != 143 or not ckpts:
        raise SystemExit(f"the killed run exited {rc_kill} with checkpoints {ckpts}: see {work / 'run.log'}")
    stopped_at = int(ckpts[-1].name.split("-")[1])
    rc, resume_s = timed(command(train, run_out, args, "--resume", "true"), work / "resume.log")
    if rc != 0:
        raise SystemExit(f"the resumed run failed (rc {rc}): see {work / 'resume.log'}")

    ref, resumed = losses(ref_out), losses(run_out)
    diffs = {s: abs(ref[s] - resumed[s]) for s in ref if s in resumed}
    before = [d for s, d in diffs.items() if s <= stopped_at]
    after = [d for s, d in diffs.items() if s > stopped_at]
    plot(ref, resumed, stopped_at, RESULTS / "sigterm_resume.png")
    lines = [
        "# SIGTERM and --resume on a real run (issue 14)", "",
        f"Command: `python benchmarks/sigterm_resume.py --records {args.records} --max-steps {args.max_steps} "
        f"--kill-after {args.kill_after:.0f}`  ",
        f"Date: {datetime.date.today()}; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
        "(2-core CPU, one run at a time).  ",
        f"Model {args.model}, LoRA r16 all-linear, lr 2e-4, batch 4, cutoff 1024, shared-context packing, "
        f"{args.records} CMRC2018 train records, {args.max_steps} steps, default save_minutes (10).", "",
        "| what | value |", "|---|---|",
        f"| reference run (never stopped) | {ref_s:.0f} s, {len(ref)} logged steps |",
        f"| killed run | SIGTERM at {kill_s:.0f} s, exit status {rc_kill}, checkpoint `step-{stopped_at}` |",
        f"| what it printed | `{said[-1].strip() if said else '(nothing)'}` |",
        f"| resumed run | {resume_s:.0f} s, steps {stopped_at + 1}-{max(resumed)} |",
        f"| steps lost | {len(ref) - len(resumed)} (steps in both curves: {len(diffs)}) |",
        f"| max abs loss difference, steps 1-{stopped_at} | {max(before, default=float('nan')):.2e} |",
        f"| max abs loss difference, steps {stopped_at + 1}-{max(ref)} | {max(after, default=float('nan')):.2e} |",
        f"| final loss: reference / resumed | {ref[max(ref)]:.4f} / {resumed[max(resumed)]:.4f} |",
        "", "![both loss curves](sigterm_resume.png)",
    ]
    (RESULTS / "sigterm_resume.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"model: {run_out}", file=sys.stderr)


if __name__ == "__main__":
    main()
