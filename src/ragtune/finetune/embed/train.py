"""``finetune_embedding(cfg)``: evaluate base -> train -> evaluate tuned -> save model + metrics."""
from __future__ import annotations

import resource
import shutil
import time
from pathlib import Path
from typing import Any

from ...core.io import atomic_dir, atomic_write_json
from ...core.log import get_logger
from ...data.embed_sets import load_eval_with_corpus, load_train
from ..base import FinetuneResult
from .config import EmbedFinetuneConfig
from .data import query_instruction, split_train
from .evaluate import evaluate_embedder, write_reports

log = get_logger(__name__)


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
    records = load_train(cfg.train)
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

    model = load_sentence_transformer(base_path)
    base_metrics = evaluate_embedder(SentenceTransformerEmbedder(model), evals, cfg.eval_ks, pool) if evals else None
    out = Path(str(cfg.output))
    with atomic_dir(out) as tmp:
        start = time.perf_counter()
        if cfg.backend == "flagembedding":
            from .flag_backend import as_sentence_transformer, train_flagembedding

            bf16 = resolve_dtype(cfg.dtype) == torch.bfloat16 and torch.cuda.is_available()
            hf_dir = train_flagembedding(cfg, base_path, train_records, instruction, tmp, bf16)
            from .flag_backend import detect_pooling

            pooling = cfg.pooling if cfg.pooling != "auto" else detect_pooling(base_path)
            model = as_sentence_transformer(hf_dir, pooling, max(cfg.query_max_len, cfg.passage_max_len))
            loss_history: list[tuple[int, float]] = []
        else:
            from .st_backend import train_sentence_transformers

            loss_history = train_sentence_transformers(cfg, model, train_records, instruction, tmp)
        train_seconds = time.perf_counter() - start
        # Saved with the model: encode_query() applies it, encode_document() does not.
        prompts = {k: v for k, v in (model.prompts or {}).items() if k not in ("query", "document")}
        if instruction:
            prompts["query"] = instruction
        model.prompts = prompts
        model.default_prompt_name = None
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        shutil.rmtree(tmp / "fe_model", ignore_errors=True)
        model.save(str(tmp))
        tuned_metrics = evaluate_embedder(SentenceTransformerEmbedder(model), evals, cfg.eval_ks, pool) if evals else None
        metrics = {
            "base_model": cfg.base, "backend": cfg.backend, "query_instruction": instruction,
            "train_records": len(train_records), "eval_queries": len(evals),
            "train_seconds": round(train_seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "loss_history": loss_history,
            "base": base_metrics, "tuned": tuned_metrics,
        }
        atomic_write_json(tmp / "metrics.json", metrics)
        cfg.save(tmp / "ragtune_config.yaml")
        if evals:
            assert base_metrics is not None and tuned_metrics is not None   # both scored when there are evals
            write_reports(tmp, base_metrics, tuned_metrics, cfg.eval_ks, loss_history)
    if evals:
        assert base_metrics is not None and tuned_metrics is not None
        log.info("recall@1 base %.4f -> tuned %.4f", base_metrics["recall@1"], tuned_metrics["recall@1"])
    return EmbedFinetuneResult(out, metrics)
