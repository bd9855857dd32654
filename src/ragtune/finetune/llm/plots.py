"""Loss curve PNG, with the dev metrics (if any) on a second axis."""
from __future__ import annotations

from pathlib import Path


def plot_loss(history: list[dict], path: Path) -> Path:
    from ...core.io import atomic_open
    from ...core.plotting import figure

    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    devs = [(h["step"], h["dev"]) for h in history if "dev" in h]
    fig, ax = figure(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (answer tokens)")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if devs:
        right = ax.twinx()
        for name in devs[0][1]:
            points = [(s, d[name]) for s, d in devs if d.get(name) is not None]
            if points:
                right.plot(*zip(*points), "s--", label=f"dev {name}")
        right.set_ylabel("dev metric")
        right.set_ylim(0, 1)
        more_h, more_l = right.get_legend_handles_labels()
        handles, labels = handles + more_h, labels + more_l
    ax.legend(handles, labels, loc="center right", fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")
    return path
