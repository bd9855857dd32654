"""``ragtune sweep SWEEP.yaml``: a grid of ``ragtune run`` configs, run through the stage cache, ranked.

    run: {...}                       # a full run config (the same keys as `ragtune run`)
    grid:                            # dotted key -> values; every combination is one run
      llm.finetune.learning_rate: [1.0e-4, 2.0e-4]
      llm.method: [lora, full]
    recipes:                         # optional: named sets of dotted keys, each crossed with the grid
      lora-r64: {llm.finetune.lora_rank: 64, llm.finetune.lora_alpha: 128}
      full: {llm.method: full, llm.finetune.learning_rate: 1.0e-4}
    rank_by: dev.cmrc_f1             # dev.<metric> (held-out training records: the honest choice) or
                                     # eval.<metric> (the tuned model on the eval set)
    output: runs/sweep-cmrc          # each run in output/<name>/, the report in output/

Every combination is validated before the first one runs (a typo or a key of another method fails
at once). Re-running skips finished stages, so a grid can grow or be resumed. The report ranks the
runs and plots the metric against the CPU minutes each fine-tune took.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from ..core.config import Config
from ..core.errors import ConfigError
from ..core.log import get_logger
from .run import RunConfig, run_config

log = get_logger(__name__)


class SweepConfig(Config):
    run: dict[str, Any] = Field(description="The run config every grid point starts from.")
    grid: dict[str, list[Any]] = Field(default_factory=dict,
                                       description="Dotted keys (llm.finetune.learning_rate) -> values to try.")
    recipes: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Named recipes, each a set of dotted keys -> one value, crossed with the grid: points "
                    "that differ in several keys at once (LoRA at one lr, full fine-tuning at another).")
    rank_by: str = Field("dev.exact", description="dev.<metric> or eval.<metric>.")
    output: str = Field(description="Directory of the runs and the report.")

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if any(not isinstance(v, list) or not v for v in grid.values()):
            raise ValueError("each grid key needs a non-empty list of values")
        return grid

    @model_validator(mode="after")
    def _some_points(self) -> SweepConfig:
        if not self.grid and not self.recipes:
            raise ValueError("a sweep needs a grid (dotted key -> values) or recipes (name -> dotted keys)")
        shared = sorted({k for r in self.recipes.values() for k in r} & set(self.grid))
        if shared:
            # a key in both would be set twice per point: which wins is a guess, so refuse it
            raise ValueError(f"{', '.join(shared)}: set by both grid and recipes; keep each key in one of them")
        return self

    @field_validator("rank_by")
    @classmethod
    def _rank(cls, value: str) -> str:
        if value.partition(".")[0] not in ("dev", "eval") or not value.partition(".")[2]:
            raise ValueError("rank_by is dev.<metric> or eval.<metric>")
        return value

    def points(self) -> list[tuple[str, RunConfig]]:
        """(name, validated run config) per combination, in grid order."""
        keys = list(self.grid)
        recipes: list[tuple[str, dict[str, Any]]] = list(self.recipes.items()) or [("", {})]
        out = []
        for (recipe, overrides), values in itertools.product(recipes, itertools.product(*(self.grid[k] for k in keys))):
            data = json.loads(json.dumps(self.run))
            parts = [recipe] if recipe else []
            for key, value in overrides.items():
                _set(data, key, value)
            for key, value in zip(keys, values):
                _set(data, key, value)
                parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
            name = ",".join(parts).replace("/", "_")
            data["run_dir"] = str(Path(self.output) / name)
            try:
                out.append((name, RunConfig.build(f"sweep point {name}", **data)))
            except ConfigError as exc:
                message = exc.message if f"sweep point {name}" in exc.message else f"sweep point {name}: {exc.message}"
                raise ConfigError(message, hint=exc.hint) from None
        return out

    def execute(self) -> dict[str, Any]:
        return run_sweep(self)


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *path, last = dotted.split(".")
    for key in path:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"grid key {dotted}: {key} is not a section")
    node[last] = value


def run_sweep(cfg: SweepConfig) -> dict[str, Any]:
    points = cfg.points()
    log.info("sweep: %d runs in %s", len(points), cfg.output)
    rows = []
    for name, run in points:
        log.info("sweep run %s", name)
        run_config(run)
        rows.append(_row(name, Path(run.run_dir), cfg.rank_by))
    rows.sort(key=lambda r: (r["rank_value"] is None, -(r["rank_value"] or 0)))
    report = {"rank_by": cfg.rank_by, "grid": cfg.grid, "recipes": cfg.recipes, "runs": rows}
    _write(Path(cfg.output), report)
    return report


def _row(name: str, run_dir: Path, rank_by: str) -> dict[str, Any]:
    metrics = json.loads((run_dir / "finetune_llm" / "model" / "metrics.json").read_text(encoding="utf-8"))
    marker = json.loads((run_dir / "finetune_llm" / ".stage.json").read_text(encoding="utf-8"))
    scores: dict[str, Any] = {}
    summary_file = run_dir / "eval_tuned" / "result" / "summary.json"
    if summary_file.exists():
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
        scores = {k: v.get("mean") for k, v in summary["metrics"].items()}
    kind, _, metric = rank_by.partition(".")
    dev = (metrics.get("best") or {}) if kind == "dev" else {}
    value = dev.get(metric) if kind == "dev" else scores.get(metric)
    return {"name": name, "run_dir": str(run_dir), "rank_value": value,
            "train_minutes": round((metrics.get("train_runtime_s") or marker.get("seconds", 0)) / 60, 2),
            "train_samples": metrics.get("train_samples"), "steps": metrics.get("steps"),
            "records_seen": round((metrics.get("epochs") or 0) * (metrics.get("train_samples") or 0)),
            "best": metrics.get("best"), "eval": scores}


def _write(out: Path, report: dict[str, Any]) -> None:
    from ..core.io import atomic_write_json, atomic_write_text
    from ..core.plotting import figure, save_png

    rows = report["runs"]
    evals = sorted({k for r in rows for k in r["eval"]})
    lines = [f"# Sweep, ranked by {report['rank_by']}", "",
             "| # | run | " + report["rank_by"] + " | train min | steps | records seen |"
             + "".join(f" {k} |" for k in evals),
             "|---|---|---|---|---|---|" + "---|" * len(evals)]
    for i, r in enumerate(rows, 1):
        value = "n/a" if r["rank_value"] is None else f"{100 * r['rank_value']:.2f}"
        cells = [f"{100 * r['eval'][k]:.2f}" if r["eval"].get(k) is not None else "—" for k in evals]
        lines.append(f"| {i} | {r['name']} | {value} | {r['train_minutes']:.1f} | {r.get('steps')} | "
                     f"{r.get('records_seen', '—')} |" + "".join(f" {c} |" for c in cells))
    lines += ["", "Values in %. train min: minutes of training steps; records seen: epochs x training "
              "records.", "",
              "![metric vs training minutes](sweep.png)"]
    atomic_write_text(out / "sweep.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "sweep.json", report)
    fig, ax = figure(figsize=(7, 4.5), dpi=100)
    for r in rows:
        if r["rank_value"] is not None:
            ax.scatter(r["train_minutes"], 100 * r["rank_value"])
            ax.annotate(r["name"], (r["train_minutes"], 100 * r["rank_value"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("training minutes (CPU)")
    ax.set_ylabel(f"{report['rank_by']} (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, out / "sweep.png")
