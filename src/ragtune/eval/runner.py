"""``evaluate_llm``: score a predictions file against an eval set and write a run directory.

Judge results are resumable: each finished judge result is appended to a side file (see
:class:`~ragtune.core.partial.PartialResults`) next to the run, ``OUTPUT/eval-<name>.partial.jsonl``
(or ``RUN_DIR.partial.jsonl``); a rerun with the same eval set, predictions and judge settings asks
the judge only about the items not there (nor those whose call timed out), and the side file is
removed once the run is written.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import Field, model_validator

from ..core.config import Config
from ..core.errors import ConfigError
from ..core.log import get_logger
from ..core.partial import PartialResults
from ..engine.client import ServerUrl
from .base import EvalItem, Metric, MetricResult, list_metrics, metric_class
from .data import load_evalset, load_predictions
from .judge import _JudgedMetric
from .runs import EvalRun

log = get_logger(__name__)


MetricSpec = str | dict[str, Any]


class MetricOptions(Config):
    """Defaults that fill the metrics' own parameters when a metric entry does not set them (the
    shared knobs of `ragtune eval llm` and of a run's ``eval`` section)."""
    embed: str = Field("all-MiniLM-L6-v2", description="embedding model for cosine / answer_relevance")
    metrics: list[MetricSpec] = Field(["exact", "cosine", "origin"],
                                      description="metrics: names, or {name: ..., <param>: ...} entries")
    origin_tokenizer: Literal["auto", "jieba", "char", "whitespace"] = Field(
        "auto", description="word splitter of the origin metric (auto: jieba for CJK text)")
    exact_mode: Literal["strict", "lenient", "both"] = Field(
        "strict", description="exact match: strict, lenient (all_answers, punctuation-insensitive) or both")
    batch_size: int = Field(32, ge=1, description="embedding batch size")
    judge_base_url: ServerUrl | None = Field(None, description="OpenAI-compatible judge URL (faithfulness, answer_relevance)")
    judge_model: str | None = Field(None, description="judge model name")
    judge_retries: int = Field(2, ge=0, description="retries after malformed judge output")
    judge_timeout: float = Field(120.0, gt=0, description="seconds per judge call")
    judge_max_tokens: int = Field(1024, ge=1, description="tokens the judge may answer per call")
    judge_request_retries: int = Field(2, ge=0, description="retries after a judge call times out (or gets a 5xx)")
    judge_concurrency: int = Field(1, ge=1, description="items judged in parallel (judge calls in flight)")
    relevance_questions: int = Field(3, ge=1, description="questions generated per answer for answer_relevance")

    @model_validator(mode="after")
    def _check_metrics(self):
        metric_specs(self)   # unknown metric names or parameters fail here, before anything runs
        return self


class LlmEvalConfig(MetricOptions):
    """`ragtune eval llm`: one config for Python, CLI flags and YAML."""
    evalset: str = Field(description="eval set (JSON list or JSONL) with question, context, answers")
    predictions: str = Field(description="predictions (JSON/JSONL strings or objects with prediction/output)")
    output: str | None = Field(None, description="parent directory; the run is written to OUTPUT/eval-<run id>/")
    run_dir: str | None = Field(None, description="write the run to exactly this directory (replaced atomically) instead")
    name: str | None = Field(None, description="label of this run in reports (default: predictions file name)")
    judge_api_key: str | None = Field(None, description="judge API key (or $RAGTUNE_JUDGE_API_KEY)")
    restart: bool = Field(False, description="ignore earlier partial judge results and start over")

    def execute(self) -> "EvalRun":
        return evaluate_llm(self)


# metric parameter <- MetricOptions field, applied when the metric has that parameter and its
# entry does not set it
_DEFAULTS = {"embed": "embed", "batch_size": "batch_size", "tokenizer": "origin_tokenizer",
             "base_url": "judge_base_url", "model": "judge_model", "max_retries": "judge_retries",
             "n": "relevance_questions", "timeout": "judge_timeout", "max_tokens": "judge_max_tokens",
             "request_retries": "judge_request_retries", "concurrency": "judge_concurrency"}


def metric_specs(cfg: MetricOptions) -> list[tuple[str, dict[str, Any]]]:
    """(name, validated parameters) per metric, in order, with the shared defaults filled in."""
    out: list[tuple[str, dict[str, Any]]] = []
    for i, spec in enumerate(cfg.metrics):
        if isinstance(spec, str):
            name, params = spec, {}
        elif isinstance(spec, dict) and isinstance(spec.get("name"), str):
            name, params = spec["name"], {k: v for k, v in spec.items() if k != "name"}
        else:
            raise ConfigError(f"metrics[{i}] must be a metric name or a mapping with a 'name' key, got {spec!r}")
        if name == "exact" and cfg.exact_mode != "strict" and not params:
            names = ["exact_lenient"] if cfg.exact_mode == "lenient" else ["exact", "exact_lenient"]
        else:
            names = [name]
        for n in names:
            cls = metric_class(n)
            fields = cls.Params.model_fields
            filled = {p: getattr(cfg, src) for p, src in _DEFAULTS.items() if p in fields and p not in params}
            try:
                cls.Params.build(f"metrics[{i}] ({n})", **{**filled, **params})
            except ConfigError as exc:
                raise ConfigError(exc.message, hint=exc.hint) from None
            out.append((n, {**filled, **params}))
    names_seen = [n for n, _ in out]
    dup = sorted({n for n in names_seen if names_seen.count(n) > 1})
    if dup:
        raise ConfigError(f"metric(s) {dup} listed twice; each metric is one column of the report")
    if not out:
        raise ConfigError(f"no metrics selected. Valid metrics: {', '.join(list_metrics())}")
    return out


def build_metrics(cfg: MetricOptions, api_key: str | None = None) -> list[Metric]:
    metrics: list[Metric] = []
    for name, params in metric_specs(cfg):
        cls = metric_class(name)
        if "progress" in cls.Params.model_fields and "progress" not in params:
            params = {**params, "progress": True}
        extra: dict[str, Any] = {"api_key": api_key} if issubclass(cls, _JudgedMetric) else {}
        metrics.append(cls(**params, **extra))
    return metrics


def score_items(items: list[EvalItem], metrics: list[Metric],
                partial: PartialResults | None = None) -> dict[str, list[MetricResult]]:
    """Each metric's result per item. Judged metrics ask ``concurrency`` items at a time; with
    ``partial``, results already there are reused and every new one is recorded as it finishes
    (except a judge call that timed out: that item is asked again on the next run)."""
    results: dict[str, list[MetricResult]] = {}
    for metric in metrics:
        if isinstance(metric, _JudgedMetric):
            results[metric.name] = _judge_items(items, metric, partial)
        else:
            results[metric.name] = metric.score_batch(items)
        log.info("scored %s", metric.name)
    return results


def _judge_items(items: list[EvalItem], metric: _JudgedMetric, partial: PartialResults | None) -> list[MetricResult]:
    from tqdm.auto import tqdm

    from ..core.concurrency import as_completed_in_threads

    out: list[MetricResult | None] = [None] * len(items)
    if partial is not None:
        for i in range(len(items)):
            row = partial.done.get((metric.name, i))
            if row is not None:
                out[i] = MetricResult(**row["result"])
    todo = [i for i, r in enumerate(out) if r is None]
    if len(todo) < len(items):
        log.info("%s: resuming, %d of %d items already judged in %s", metric.name, len(items) - len(todo),
                 len(items), partial.path if partial else "")
    with tqdm(total=len(items), initial=len(items) - len(todo), desc=metric.name, unit="item") as bar:
        # an unreachable judge or a rejected request raises here and stops (finished items are kept);
        # Ctrl-C / SIGTERM stop at once, not after the judge calls in flight (core/concurrency.py)
        for i, result in as_completed_in_threads(lambda i: metric.score(items[i]), todo, metric.concurrency):
            out[i] = result
            if partial is not None and not (result.details or {}).get("transient"):
                partial.add({"metric": metric.name, "index": i, "result": result.to_dict()})
            bar.update(1)
    final = [r for r in out if r is not None]
    failed = sum(bool((r.details or {}).get("transient")) for r in final)
    if failed:
        log.info("%s: %d of %d judge calls failed (timeout / server error) and are recorded as errors; "
                 "rerun the same command to ask the judge about them again", metric.name, failed, len(items))
    return final


def _partial_key(row: dict[str, Any]) -> tuple[str, int]:
    return str(row["metric"]), int(row["index"])


def judge_fingerprint(items: list[EvalItem], judged: list[_JudgedMetric]) -> dict[str, Any]:
    """The data and the judge settings that decide judged results (not how the judge is reached)."""
    data = json.dumps([[it.question, it.context, it.reference, it.all_answers, it.prediction] for it in items],
                      ensure_ascii=False).encode()
    return {"items_sha256": hashlib.sha256(data).hexdigest(), "items": len(items),
            "metrics": [m.fingerprint() for m in judged]}


def evaluate_llm(cfg: LlmEvalConfig | None = None, **kwargs: Any) -> EvalRun:
    """Score ``cfg.predictions`` against ``cfg.evalset``; write items.json, summary.json,
    report.md, report.html and config.yaml into ``cfg.output/eval-<run id>/`` (atomically)."""
    from ..core.io import atomic_dir, atomic_write_json, atomic_write_text, check_output, new_run_id
    from .base import aggregate
    from .report import markdown_table, render_html

    cfg = cfg or LlmEvalConfig.build(**kwargs)
    if (cfg.output is None) == (cfg.run_dir is None):
        raise ConfigError("give exactly one of output (a parent directory) or run_dir")
    check_output(cast(str, cfg.run_dir or cfg.output), directory=True, what="run_dir" if cfg.run_dir else "output")
    items = load_evalset(cfg.evalset)
    preds = load_predictions(cfg.predictions, expected=len(items))
    for item, pred in zip(items, preds):
        item.prediction = pred
    metrics = build_metrics(cfg, cfg.judge_api_key)
    judged = [m for m in metrics if isinstance(m, _JudgedMetric)]
    partial = None
    if judged:
        side = (Path(str(cfg.run_dir) + ".partial.jsonl") if cfg.run_dir else
                Path(str(cfg.output)) / f"eval-{cfg.name or Path(cfg.predictions).stem}.partial.jsonl")
        partial = PartialResults(side, judge_fingerprint(items, judged), restart=cfg.restart, key=_partial_key)
        log.info("judge results are recorded in %s as they finish (a rerun resumes from there)", side)
    try:
        results = score_items(items, metrics, partial)
    finally:
        if partial is not None:
            partial.close()

    run_id = new_run_id()
    rows = [{"index": i, "question": it.question, "context": it.context, "reference": it.reference,
             "all_answers": it.all_answers, "prediction": it.prediction,
             "scores": {m.name: results[m.name][i].to_dict() for m in metrics}} for i, it in enumerate(items)]
    warnings = [w for m in metrics for w in getattr(m, "warnings", [])]
    summary = {
        "run_id": run_id, "name": cfg.name or Path(cfg.predictions).stem, "evalset": str(cfg.evalset),
        "predictions": str(cfg.predictions), "n_items": len(items),
        "metrics": {m.name: {**m.describe(), **aggregate(results[m.name]).to_dict()} for m in metrics},
        "warnings": warnings,
    }
    run_dir = Path(cfg.run_dir) if cfg.run_dir else Path(str(cfg.output)) / f"eval-{run_id}"
    with atomic_dir(run_dir) as tmp:
        atomic_write_json(tmp / "items.json", rows)
        atomic_write_json(tmp / "summary.json", summary)
        cfg.save(tmp / "config.yaml")
        run = EvalRun(run_dir, summary, rows)
        notes = "".join(f"\n> warning: {w}\n" for w in warnings)
        atomic_write_text(tmp / "report.md", markdown_table([run]) + notes)
        atomic_write_text(tmp / "report.html", render_html([run], title=f"ragtune eval: {summary['name']}"))
    if partial is not None:
        partial.path.unlink(missing_ok=True)
    return run
