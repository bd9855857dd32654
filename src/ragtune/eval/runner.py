"""``evaluate_llm``: score a predictions file against an eval set and write a run directory."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, cast

from pydantic import Field, model_validator

from ..core.config import Config
from ..core.errors import ConfigError
from ..core.log import get_logger
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
    judge_base_url: str | None = Field(None, description="OpenAI-compatible judge URL (faithfulness, answer_relevance)")
    judge_model: str | None = Field(None, description="judge model name")
    judge_retries: int = Field(2, ge=0, description="retries after malformed judge output")
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

    def execute(self) -> "EvalRun":
        return evaluate_llm(self)


# metric parameter <- MetricOptions field, applied when the metric has that parameter and its
# entry does not set it
_DEFAULTS = {"embed": "embed", "batch_size": "batch_size", "tokenizer": "origin_tokenizer",
             "base_url": "judge_base_url", "model": "judge_model", "max_retries": "judge_retries",
             "n": "relevance_questions"}


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


def score_items(items: list[EvalItem], metrics: list[Metric]) -> dict[str, list[MetricResult]]:
    from tqdm.auto import tqdm

    results: dict[str, list[MetricResult]] = {}
    for metric in metrics:
        if isinstance(metric, _JudgedMetric):   # one judge call per item: show progress
            results[metric.name] = [metric.score(it) for it in tqdm(items, desc=metric.name, unit="item")]
        else:
            results[metric.name] = metric.score_batch(items)
        log.info("scored %s", metric.name)
    return results


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
    results = score_items(items, metrics)

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
    return run
