"""The Compare page: eval runs side by side with the functions ``ragtune eval compare`` uses
(ragtune.eval.report), so the table here and the report file say the same."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError


def _labels(runs: Sequence[Any]) -> list[str]:
    names = [r.summary.get("name") or r.path.name for r in runs]
    return [n if names.count(n) == 1 else f"{n} ({r.summary.get('run_id')})" for n, r in zip(names, runs)]


def compare(paths: Sequence[Path], spread: float = 0.3, max_items: int = 200) -> dict[str, Any]:
    from ..eval.report import check_same_evalset, disagreements, format_score
    from ..eval.runs import load_run

    if not paths:
        raise ConfigError("runs: choose at least one eval run")
    runs = [load_run(p) for p in paths]
    check_same_evalset(runs)
    labels = _labels(runs)
    metric_names: list[str] = []
    for r in runs:
        metric_names += [m for m in r.summary["metrics"] if m not in metric_names]
    metrics = []
    for m in metric_names:
        desc = next(r.summary["metrics"][m] for r in runs if m in r.summary["metrics"])
        metrics.append({"name": m, "title": desc.get("title", m), "kind": desc.get("kind"),
                        "higher_is_better": desc.get("higher_is_better", True),
                        "description": desc.get("description")})
    table = []
    for label, r in zip(labels, runs):
        cells = {}
        for m in metric_names:
            agg = r.summary["metrics"].get(m)
            cells[m] = None if agg is None else {"mean": agg.get("mean"), "text": format_score(agg)}
        table.append({"label": label, "path": str(r.path), "n_items": r.summary["n_items"], "cells": cells})
    dis: list[dict[str, Any]]
    dis = disagreements(runs, spread) if len(runs) > 1 else [{"index": i, "metrics": []}
                                                           for i in range(runs[0].summary["n_items"])]
    items = []
    for d in dis[:max_items]:
        i = d["index"]
        first = runs[0].items[i]
        items.append({"index": i, "question": first["question"], "reference": first["reference"],
                      "metrics": d["metrics"],
                      "runs": [{"prediction": r.items[i]["prediction"],
                                "scores": {m: (r.items[i]["scores"].get(m) or {}).get("value") for m in metric_names}}
                               for r in runs]})
    return {"labels": labels, "metrics": metrics, "table": table, "items": items,
            "n_items": runs[0].summary["n_items"], "n_disagree": len(dis) if len(runs) > 1 else None,
            "spread": spread}
