"""``finetune_embedding(cfg)``: evaluate base -> train -> evaluate tuned -> save model + metrics."""
from __future__ import annotations

import resource
import shutil
import time
from pathlib import Path
from typing import Any

from ...core.io import atomic_dir, atomic_write_json
from ...core.log import get_logger
from ...data.embed_sets import RetrievalItem, TrainRecord, load_eval_with_corpus, load_train
from ..base import FinetuneResult
from .config import EmbedFinetuneConfig
from .data import query_instruction, split_train
from .evaluate import LEAD_METRICS, evaluate_embedder, regressions, write_reports

log = get_logger(__name__)

# Below this many held-out queries a retrieval score says little (2 queries against 2 passages
# score 1.0 with any model), so the run says so.
MIN_EVAL_QUERIES = 50


class EmbedFinetuneResult(FinetuneResult):
    """The protocol's result; ``base`` / ``tuned``: held-out retrieval metrics before and after."""

    @property
    def base(self) -> dict[str, Any]:
        return self.metrics["base"]

    @property
    def tuned(self) -> dict[str, Any]:
        return self.metrics["tuned"]


def finetune_embedding(cfg: EmbedFinetuneConfig | None = None, /, **kw: Any) -> EmbedFinetuneResult:
    """Fine-tune an embedder per ``cfg`` (or keyword fields); the output dir is a ready
    sentence-transformers model whose saved ``prompts["query"]`` carries the query instruction."""
    import torch

    from ...models import resolve_model
    from ...models.device import resolve_dtype
    from ...models.embedder import SentenceTransformerEmbedder
    from ...models.loading import load_sentence_transformer

    cfg = cfg if cfg is not None else EmbedFinetuneConfig.build(**kw)
    cfg.require_paths()
    assert cfg.train is not None and cfg.base is not None   # require_paths() checked them
    records = all_records = load_train(cfg.train)
    if cfg.max_samples is not None and cfg.max_samples < len(records):
        # A seeded random subset, not the head: files are often sorted (by company, by topic).
        import random

        log.info("max_samples=%d: training on a random %d of %d records", cfg.max_samples, cfg.max_samples, len(records))
        keep = sorted(random.Random(cfg.seed).sample(range(len(records)), cfg.max_samples))
        records = [records[i] for i in keep]
    if cfg.eval_file:
        evals, pool = load_eval_with_corpus(cfg.eval_file)   # a BEIR dir: its whole corpus is the pool
        train_records = records
    else:
        pool = []
        train_records, evals = split_train(records, cfg.eval_split, cfg.seed)
    instruction = query_instruction(records, cfg.query_instruction)
    base_path = str(resolve_model(cfg.base, kind="embedding").path)
    torch.manual_seed(cfg.seed)
    # A BEIR eval dir brings its own corpus; eval_corpus=all adds the training file's passages
    # (the same pool whatever max_samples picks).
    distractors = list(dict.fromkeys([*pool, *_distractors(cfg, all_records)]))
    ks = sorted(set(cfg.eval_ks) | {int(cfg.eval_metric.split("@")[1])})
    if evals and len(evals) < MIN_EVAL_QUERIES:
        log.warning("only %d held-out queries: retrieval metrics on so few mean little (pass --eval-file "
                    "with more queries)", len(evals))

    def score(m: Any, items: list[RetrievalItem], pool: list[str] | None = None) -> dict[str, Any]:
        return evaluate_embedder(SentenceTransformerEmbedder(m), items, ks, distractors if pool is None else pool)

    model = load_sentence_transformer(base_path)
    base_metrics = score(model, evals) if evals else None
    out = Path(str(cfg.output))
    extra: dict[str, Any] = {}
    with atomic_dir(out) as tmp:
        start = time.perf_counter()
        if cfg.backend == "flagembedding":
            from .flag_backend import as_sentence_transformer, detect_pooling, train_flagembedding

            bf16 = resolve_dtype(cfg.dtype) == torch.bfloat16 and torch.cuda.is_available()
            hf_dir = train_flagembedding(cfg, base_path, train_records, instruction, tmp, bf16)
            pooling = cfg.pooling if cfg.pooling != "auto" else detect_pooling(base_path)
            model = as_sentence_transformer(hf_dir, pooling, max(cfg.query_max_len, cfg.passage_max_len))
            loss_history: list[tuple[int, float]] = []
        elif cfg.trainer == "sentence_transformers":
            from .st_backend import train_sentence_transformers

            loss_history = train_sentence_transformers(cfg, model, train_records, instruction, tmp)
        else:
            loss_history, extra = _train_ragtune(cfg, model, train_records, instruction, evals, distractors,
                                                 score, out)
        train_seconds = time.perf_counter() - start
        model.max_seq_length = max(cfg.query_max_len, cfg.passage_max_len)
        # Saved with the model: encode_query() applies it, encode_document() does not.
        prompts = {k: v for k, v in (model.prompts or {}).items() if k not in ("query", "document")}
        if instruction:
            prompts["query"] = instruction
        model.prompts = prompts
        model.default_prompt_name = None
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        shutil.rmtree(tmp / "fe_model", ignore_errors=True)
        model.save(str(tmp))
        tuned_metrics = score(model, evals) if evals else None
        n_rows = extra.pop("rows", None)
        metrics = {
            "base_model": cfg.base, "backend": cfg.backend, "trainer": _trainer_name(cfg),
            "query_instruction": instruction,
            "train_records": len(train_records), "eval_queries": len(evals),
            "eval_corpus": cfg.eval_corpus, "eval_passages": base_metrics["n_corpus"] if base_metrics else 0,
            "train_seconds": round(train_seconds, 2),
            "examples_per_second": (round(extra["examples"] / extra["train_loop_seconds"], 2)
                                    if extra.get("train_loop_seconds") else None),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "loss_history": loss_history,
            "base": base_metrics, "tuned": tuned_metrics, **extra,
        }
        if n_rows is not None:
            metrics["train_rows"] = n_rows
        if base_metrics is not None and tuned_metrics is not None:
            worse = regressions(base_metrics, tuned_metrics, LEAD_METRICS)
            metrics["tuned_below_base"] = worse
            if worse:
                log.warning("the tuned model scores below its base on %s (see metrics.md)", ", ".join(worse))
        atomic_write_json(tmp / "metrics.json", metrics)
        cfg.save(tmp / "ragtune_config.yaml")
        if evals:
            assert base_metrics is not None and tuned_metrics is not None   # both scored when there are evals
            write_reports(tmp, base_metrics, tuned_metrics, ks, loss_history)
    if evals:
        assert base_metrics is not None and tuned_metrics is not None
        log.info("recall@1 base %.4f -> tuned %.4f", base_metrics["recall@1"], tuned_metrics["recall@1"])
    return EmbedFinetuneResult(out, metrics)


def _trainer_name(cfg: EmbedFinetuneConfig) -> str:
    return "flagembedding" if cfg.backend == "flagembedding" else cfg.trainer


def _distractors(cfg: EmbedFinetuneConfig, records: list[TrainRecord]) -> list[str]:
    """eval_corpus=all: every passage of the training file (positives and negatives) joins the
    retrieval pool; the held-out queries' own passages are relevant, the rest distract."""
    if cfg.eval_corpus != "all":
        return []
    return list(dict.fromkeys(p for r in records for p in (*r.pos, *r.neg)))


def _train_ragtune(cfg: EmbedFinetuneConfig, model: Any, train_records: list[TrainRecord], instruction: str,
                   evals: list[RetrievalItem], distractors: list[str], score: Any,
                   out: Path) -> tuple[list[tuple[int, float]], dict[str, Any]]:
    """ragtune's trainer, with a seeded dev slice of the eval set scored every ``eval_steps``
    against its passages plus a seeded sample of the distractors (3 per dev query: the full pool
    would cost minutes per evaluation on a CPU; the slice only has to rank checkpoints)."""
    import random

    from .data import training_rows
    from .fast_backend import train_ragtune

    n_neg = cfg.train_group_size - 1
    cols = training_rows(train_records, n_neg, cfg.seed)
    rng = random.Random(cfg.seed)
    dev = evals
    if len(evals) > cfg.dev_queries:
        dev = [evals[i] for i in sorted(rng.sample(range(len(evals)), cfg.dev_queries))]
    dev_pool = rng.sample(distractors, min(len(distractors), 3 * len(dev)))
    evaluate = (lambda: score(model, dev, dev_pool)) if (dev and cfg.eval_steps) else None
    if instruction:   # dev evaluations encode queries as the saved model will: with the instruction
        model.prompts = {**(model.prompts or {}), "query": instruction}
    try:
        hist = train_ragtune(cfg, model, cols, instruction, evaluate)
    except KeyboardInterrupt:
        # The atomic output dir is discarded on the way out; the weights so far are not lost.
        partial = out.with_name(out.name + ".interrupted")
        model.save(str(partial))
        log.warning("interrupted: the weights so far are in %s (a sentence-transformers model; "
                    "training does not resume from it)", partial)
        raise
    extra: dict[str, Any] = {
        "rows": len(cols["query"]), "steps": hist.steps, "examples": hist.steps * cfg.per_device_train_batch_size,
        # train_seconds (the caller's) is the whole call; the loop's own time excludes dev evaluations
        "train_loop_seconds": hist.train_seconds, "dev_eval_seconds": hist.eval_seconds,
        "dev": {"queries": len(dev), "distractors": len(dev_pool), "metric": cfg.eval_metric, "best_step": hist.best_step,
                "best_value": hist.best_value, "history": hist.evals} if evaluate else None,
        "time_budget": {"minutes": cfg.time_budget_minutes, "plans": hist.plans} if cfg.time_budget_minutes else None,
    }
    return hist.loss, extra
