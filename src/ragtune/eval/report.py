"""Reports: the chapter-style markdown table ("39.72% (398)"), run comparison, self-contained HTML.

``compare_runs`` puts several run directories of the same eval set side by side and lists the
items where the runs disagree (a binary metric differs, or a continuous one spreads by more than
``spread``).
"""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from ..core.config import Config
from ..core.errors import DataError
from .runs import EvalRun, find_runs, load_run  # noqa: F401  (load_run: public here too)


def format_score(agg: dict[str, Any]) -> str:
    """``39.72% (398)``: mean over scored items as a percentage, the sum of scores in brackets
    (one decimal for continuous scores, as in the chapter's ``86.19% (863.6)``)."""
    if not agg.get("n_ok"):
        return "n/a"
    total = agg["total"]
    shown = f"{total:.0f}" if abs(total - round(total)) < 1e-9 else f"{total:.1f}"
    cell = f"{agg['mean'] * 100:.2f}% ({shown})"
    bad = agg.get("n_error", 0) + agg.get("n_skipped", 0)
    return cell + (f" [{bad} not scored]" if bad else "")


def _metric_names(runs: Sequence[EvalRun]) -> list[str]:
    names: list[str] = []
    for run in runs:
        names += [m for m in run.summary["metrics"] if m not in names]
    return names


def _labels(runs: Sequence[EvalRun]) -> list[str]:
    """Run names, made unique with the run id when two runs share a name."""
    names = [r.summary["name"] for r in runs]
    return [n if names.count(n) == 1 else f"{n} ({r.summary['run_id']})" for n, r in zip(names, runs)]


def markdown_table(runs: Sequence[EvalRun]) -> str:
    metrics = _metric_names(runs)
    titles = {m: next(r.summary["metrics"][m]["title"] for r in runs if m in r.summary["metrics"]) for m in metrics}
    lines = ["| Model | " + " | ".join(titles[m] for m in metrics) + " | Items |",
             "|---|" + "---|" * len(metrics) + "---|"]
    for label, run in zip(_labels(runs), runs):
        cells = [format_score(run.summary["metrics"][m]) if m in run.summary["metrics"] else "—" for m in metrics]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {run.summary['n_items']} |")
    n = runs[0].summary["n_items"]
    lines += ["", f"Percentages are mean scores over the scored items; brackets hold the sum of scores "
                  f"(the total possible is the number of items, {n} here)."]
    return "\n".join(lines) + "\n"


def disagreements(runs: Sequence[EvalRun], spread: float = 0.3) -> list[dict[str, Any]]:
    """Items where runs disagree on some metric: for each, the metrics that differ."""
    if len(runs) < 2:
        return []
    out = []
    for i in range(runs[0].summary["n_items"]):
        differing = []
        for m in _metric_names(runs):
            vals = [r.items[i]["scores"].get(m, {}).get("value") for r in runs]
            vals = [v for v in vals if v is not None]
            if len(vals) < 2:
                continue
            binary = any(r.summary["metrics"].get(m, {}).get("kind") == "binary" for r in runs)
            if (binary and len(set(vals)) > 1) or (max(vals) - min(vals) > spread):
                differing.append(m)
        if differing:
            out.append({"index": i, "metrics": differing})
    return out


def check_same_evalset(runs: Sequence[EvalRun]) -> None:
    first = runs[0]
    for run in runs[1:]:
        same = (run.summary["n_items"] == first.summary["n_items"] and
                all(a["question"] == b["question"] for a, b in zip(run.items, first.items)))
        if not same:
            raise DataError(f"run {run.path} was not scored on the same eval set as {first.path} "
                            "(different items or order); runs can only be compared item by item on the same set",
                            file=str(run.path))


def compare_markdown(runs: Sequence[EvalRun], max_items: int = 50, spread: float = 0.3) -> str:
    labels = _labels(runs)
    parts = ["# Comparison\n", markdown_table(runs)]
    dis = disagreements(runs, spread)
    parts.append(f"\n## Items where the runs disagree ({len(dis)} of {runs[0].summary['n_items']})\n")
    if dis:
        parts.append("| # | Question | Reference | " + " | ".join(labels) + " |")
        parts.append("|---|---|---|" + "---|" * len(runs))
        for d in dis[:max_items]:
            i = d["index"]
            cells = [_md(_pred_with_scores(r.items[i], d["metrics"])) for r in runs]
            parts.append(f"| {i} | {_md(runs[0].items[i]['question'])} | {_md(runs[0].items[i]['reference'])} | "
                         + " | ".join(cells) + " |")
        if len(dis) > max_items:
            parts.append(f"\n… {len(dis) - max_items} more in the HTML report.")
    return "\n".join(parts) + "\n"


def _md(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[:limit] + "…"
    return text.replace("|", "\\|")


def _pred_with_scores(item: dict[str, Any], metrics: Sequence[str]) -> str:
    scores = ", ".join(f"{m}={item['scores'][m]['value']:.2f}" for m in metrics
                       if item["scores"].get(m, {}).get("value") is not None)
    return f"{item['prediction']!s} ({scores})"


# -- HTML ---------------------------------------------------------------------------------------
def bar_chart_png(runs: Sequence[EvalRun]) -> bytes:
    """Grouped bar chart: one group per metric, one bar per run, mean score in %."""
    import numpy as np

    from ..core.plotting import figure

    metrics = _metric_names(runs)
    labels = _labels(runs)
    x = np.arange(len(metrics))
    width = 0.8 / len(runs)
    fig, ax = figure(figsize=(max(5.0, 2.0 * len(metrics) + 1.5), 3.8), dpi=110)
    for k, (label, run) in enumerate(zip(labels, runs)):
        vals = [(run.summary["metrics"].get(m, {}).get("mean") or 0.0) * 100 for m in metrics]
        bars = ax.bar(x + (k - (len(runs) - 1) / 2) * width, vals, width, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    titles = [next(r.summary["metrics"][m]["title"] for r in runs if m in r.summary["metrics"]) for m in metrics]
    import textwrap

    ax.set_xticks(x, ["\n".join(textwrap.wrap(t, 14)) for t in titles])   # long titles must not overlap
    ax.set_ylim(0, 110)
    ax.set_ylabel("score (%)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","Noto Sans",sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
td.diff{font-weight:bold;outline:2px solid #c0392b;outline-offset:-2px}td.good{background:#e3f4e1}td.bad{background:#fbe3e1}td.err{background:#fff1c2}
td.pred{white-space:pre-wrap;max-width:360px}.small{color:#666;font-size:12px}.ctx{max-width:420px;color:#555;font-size:12px}
img{max-width:100%;border:1px solid #eee}
"""


def _cell_class(score: dict[str, Any] | None) -> str:
    if not score or score.get("status") != "ok":
        return "err"
    return "good" if score["value"] >= 0.5 else "bad"


def _score_td(score: dict[str, Any] | None, differs: bool = False) -> str:
    if not score:
        return '<td class="err">—</td>'
    text = f"{score['value']:.2f}" if score.get("value") is not None else score.get("status", "")
    title = html.escape(score.get("reason") or "", quote=True)
    extra = " diff" if differs else ""
    return f'<td class="num {_cell_class(score)}{extra}" title="{title}">{text}</td>'


def _summary_table_html(runs: Sequence[EvalRun]) -> str:
    metrics = _metric_names(runs)
    head = "".join(f"<th>{html.escape(next(r.summary['metrics'][m]['title'] for r in runs if m in r.summary['metrics']))}</th>"
                   for m in metrics)
    rows = []
    for label, run in zip(_labels(runs), runs):
        cells = "".join(f'<td class="num">{html.escape(format_score(run.summary["metrics"][m]))}</td>'
                        if m in run.summary["metrics"] else "<td>—</td>" for m in metrics)
        rows.append(f"<tr><td>{html.escape(label)}</td>{cells}<td class='num'>{run.summary['n_items']}</td></tr>")
    return f"<table><tr><th>Model</th>{head}<th>Items</th></tr>{''.join(rows)}</table>"


def _items_table_html(runs: Sequence[EvalRun], indices: Sequence[int], metrics: Sequence[str],
                      differing: dict[int, list[str]] | None = None) -> str:
    labels = _labels(runs)
    head = "<tr><th>#</th><th>Question</th><th>Reference</th>" + "".join(
        f"<th>{html.escape(label)}</th>" + "".join(f"<th>{html.escape(m)}</th>" for m in metrics) for label in labels
    ) + "</tr>"
    rows = []
    for i in indices:
        first = runs[0].items[i]
        cells = "".join(
            f"<td class='pred'>{html.escape(r.items[i]['prediction'])}</td>" + "".join(_score_td(r.items[i]['scores'].get(m), m in (differing or {}).get(i, ())) for m in metrics)
            for r in runs)
        rows.append(f"<tr><td class='num'>{i}</td><td>{html.escape(first['question'])}</td>"
                    f"<td>{html.escape(first['reference'])}</td>{cells}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def render_html(runs: Sequence[EvalRun], title: str = "ragtune eval comparison", max_items: int = 200,
                spread: float = 0.3) -> str:
    """Self-contained page: summary table, bar chart (PNG embedded as base64), per-item table
    (a single run) or the items where the runs disagree (several runs)."""
    png = base64.b64encode(bar_chart_png(runs)).decode("ascii")
    metrics = _metric_names(runs)
    n = runs[0].summary["n_items"]
    sources = "".join(f"<li>{html.escape(label)}: <code>{html.escape(str(r.path))}</code> "
                      f"(run {html.escape(r.summary['run_id'])}, predictions <code>{html.escape(r.summary['predictions'])}</code>)</li>"
                      for label, r in zip(_labels(runs), runs))
    if len(runs) == 1:
        indices, differing = list(range(min(n, max_items))), None
        section = f"<h2>Items ({len(indices)} of {n} shown)</h2>"
    else:
        dis = disagreements(runs, spread)
        indices = [d["index"] for d in dis][:max_items]
        differing = {d["index"]: d["metrics"] for d in dis}
        section = (f"<h2>Items where the runs disagree ({len(dis)} of {n}; {len(indices)} shown)</h2>"
                   f"<p class='small'>An item is listed when a 0/1 metric differs between runs or a continuous "
                   f"score spreads by more than {spread:.2f}; the scores that differ are outlined. Hover a score for its reason.</p>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body><h1>{html.escape(title)}</h1>
<p class="small">Percentages are mean scores over scored items; brackets hold the sum of scores (at most {n}, the number of items).</p>
{_summary_table_html(runs)}
<img alt="mean score per metric and run" src="data:image/png;base64,{png}">
<ul class="small">{sources}</ul>
{section}
{_items_table_html(runs, indices, metrics, differing)}
</body></html>
"""


def compare_runs(paths: Sequence[str | Path], output: str | Path, spread: float = 0.3,
                 stem: str | None = None) -> dict[str, Path]:
    """Write ``compare-<run id>.md`` and ``.html`` (or ``<stem>.md/.html``) for the runs under
    ``paths`` into ``output``."""
    from ..core.io import atomic_write_text, new_run_id

    runs = find_runs(paths)
    check_same_evalset(runs)
    stem_path = Path(output) / (stem or f"compare-{new_run_id()}")
    md = atomic_write_text(stem_path.with_suffix(".md"), compare_markdown(runs, spread=spread))
    page = atomic_write_text(stem_path.with_suffix(".html"), render_html(runs, spread=spread))
    return {"markdown": md, "html": page}


class CompareConfig(Config):
    """`ragtune eval compare`: runs side by side (markdown + self-contained HTML)."""
    runs: list[str] = Field(description="eval run directories, or parents holding eval-* runs")
    output: str = Field(".", description="directory for the report")
    spread: float = Field(0.3, ge=0, le=1, description="a continuous score differing by more than this counts as a disagreement")
    stem: str | None = Field(None, description="file name stem (default: compare-<run id>)")

    def execute(self) -> dict[str, Path]:
        return compare_runs(self.runs, self.output, self.spread, self.stem)
