"""``evaluate_llm``: score a predictions file against an eval set and write a run directory."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..core.config import Config
from ..core.errors import ConfigError
from ..core.log import get_logger
from .base import EvalItem, Metric, MetricResult, get_metric, list_metrics
from .data import load_evalset, load_predictions

log = get_logger(__name__)


class LlmEvalConfig(Config):
    """`ragtune eval llm`: one config for Python, CLI flags and YAML."""
    evalset: str = Field(description="eval set (JSON list or JSONL) with question, context, answers")
    predictions: str = Field(description="predictions (JSON/JSONL strings or objects with prediction/output)")
    output: str = Field(description="parent directory; the run is written to OUTPUT/eval-<run id>/")
    name: str | None = Field(None, description="label of this run in reports (default: predictions file name)")
    embed: str = Field("all-MiniLM-L6-v2", description="embedding model for cosine / answer_relevance")
    metrics: list[str] = Field(["exact", "cosine", "origin"], description="metrics to compute")
    origin_tokenizer: Literal["auto", "jieba", "char", "whitespace"] = Field(
        "auto", description="word splitter of the origin metric (auto: jieba for CJK text)")
    exact_mode: Literal["strict", "lenient", "both"] = Field(
        "strict", description="exact match: strict, lenient (all_answers, punctuation-insensitive) or both")
    batch_size: int = Field(32, description="embedding batch size")
    judge_base_url: str | None = Field(None, description="OpenAI-compatible judge URL (faithfulness, answer_relevance)")
    judge_api_key: str | None = Field(None, description="judge API key (or $RAGTUNE_JUDGE_API_KEY)")
    judge_model: str | None = Field(None, description="judge model name")
    judge_retries: int = Field(2, description="retries after malformed judge output")
    relevance_questions: int = Field(3, description="questions generated per answer for answer_relevance")


def build_metrics(cfg: LlmEvalConfig) -> list[Metric]:
    names = list(dict.fromkeys(cfg.metrics))
    if "exact" in names and cfg.exact_mode != "strict":
        pos = names.index("exact")
        names[pos:pos + 1] = ["exact_lenient"] if cfg.exact_mode == "lenient" else ["exact", "exact_lenient"]
    judge = None
    metrics: list[Metric] = []
    for name in names:
        if name == "cosine":
            metrics.append(get_metric(name, embed=cfg.embed, batch_size=cfg.batch_size, progress=True))
        elif name == "origin":
            metrics.append(get_metric(name, tokenizer=cfg.origin_tokenizer))
        elif name in ("faithfulness", "answer_relevance"):
            if judge is None:
                from .judge import Judge

                judge = Judge(cfg.judge_base_url, cfg.judge_api_key, cfg.judge_model, max_retries=cfg.judge_retries)
            extra: dict[str, Any] = {"embed": cfg.embed, "n": cfg.relevance_questions} if name == "answer_relevance" else {}
            metrics.append(get_metric(name, judge=judge, **extra))
        else:
            metrics.append(get_metric(name))
    if not metrics:
        raise ConfigError(f"no metrics selected. Valid metrics: {', '.join(list_metrics())}")
    return metrics


@dataclass
class EvalRun:
    path: Path
    summary: dict[str, Any]
    items: list[dict[str, Any]]


def score_items(items: list[EvalItem], metrics: list[Metric]) -> dict[str, list[MetricResult]]:
    from tqdm.auto import tqdm

    results: dict[str, list[MetricResult]] = {}
    for metric in metrics:
        if metric.name in ("faithfulness", "answer_relevance"):   # one judge call per item: show progress
            results[metric.name] = [metric.score(it) for it in tqdm(items, desc=metric.name, unit="item")]
        else:
            results[metric.name] = metric.score_batch(items)
        log.info("scored %s", metric.name)
    return results


def evaluate_llm(cfg: LlmEvalConfig | None = None, **kwargs: Any) -> EvalRun:
    """Score ``cfg.predictions`` against ``cfg.evalset``; write items.json, summary.json,
    report.md, report.html and config.yaml into ``cfg.output/eval-<run id>/`` (atomically)."""
    from ..core.io import atomic_dir, atomic_write_json, atomic_write_text, new_run_id
    from .base import aggregate
    from .report import markdown_table, render_html

    cfg = cfg or LlmEvalConfig.build(**kwargs)
    items = load_evalset(cfg.evalset)
    preds = load_predictions(cfg.predictions, expected=len(items))
    for item, pred in zip(items, preds):
        item.prediction = pred
    metrics = build_metrics(cfg)
    results = score_items(items, metrics)

    run_id = new_run_id()
    rows = [{"index": i, "question": it.question, "context": it.context, "reference": it.reference,
             "all_answers": it.all_answers, "prediction": it.prediction,
             "scores": {m.name: results[m.name][i].to_dict() for m in metrics}} for i, it in enumerate(items)]
    summary = {
        "run_id": run_id, "name": cfg.name or Path(cfg.predictions).stem, "evalset": str(cfg.evalset),
        "predictions": str(cfg.predictions), "n_items": len(items),
        "metrics": {m.name: {"title": m.title, "params": m.describe(), **aggregate(results[m.name]).to_dict()}
                    for m in metrics},
    }
    run_dir = Path(cfg.output) / f"eval-{run_id}"
    with atomic_dir(run_dir) as tmp:
        atomic_write_json(tmp / "items.json", rows)
        atomic_write_json(tmp / "summary.json", summary)
        cfg.save(tmp / "config.yaml")
        run = EvalRun(run_dir, summary, rows)
        atomic_write_text(tmp / "report.md", markdown_table([run]))
        atomic_write_text(tmp / "report.html", render_html([run], title=f"ragtune eval: {summary['name']}"))
    return run
