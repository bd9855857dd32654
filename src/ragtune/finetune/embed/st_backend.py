"""sentence-transformers backend: SentenceTransformerTrainer + MultipleNegativesRankingLoss."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...core.log import get_logger
from ...data.embed_sets import TrainRecord
from .config import EmbedFinetuneConfig
from .data import training_rows

log = get_logger(__name__)


def train_sentence_transformers(cfg: EmbedFinetuneConfig, model: Any, records: list[TrainRecord],
                                instruction: str, workdir: Path) -> list[tuple[int, float]]:
    """Train ``model`` in place; return the (step, loss) history."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    try:  # sentence-transformers >= 6 moved these; older releases have the flat paths
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
        from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    except ImportError:  # pragma: no cover - depends on the installed version
        from sentence_transformers.losses import MultipleNegativesRankingLoss  # type: ignore[no-redef]
        from sentence_transformers.training_args import BatchSamplers  # type: ignore[no-redef]

    import torch

    from ...models.device import resolve_dtype

    n_neg = cfg.train_group_size - 1
    have = sum(1 for r in records if len(r.neg) >= n_neg)
    if n_neg and have < len(records):
        log.info("%d of %d records have fewer than %d negatives; the rest are drawn from other "
                    "records' positives", len(records) - have, len(records), n_neg)
    rows = training_rows(records, n_neg, cfg.seed)
    rows["query"] = truncate_queries(model.tokenizer, rows["query"], cfg.query_max_len, instruction)
    dataset = Dataset.from_dict(rows)
    # One max length for the model (sentence-transformers has one); queries are short anyway.
    model.max_seq_length = max(cfg.query_max_len, cfg.passage_max_len)
    bf16 = resolve_dtype(cfg.dtype) == torch.bfloat16
    args = SentenceTransformerTrainingArguments(
        output_dir=str(workdir / "trainer"),
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps or -1,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        learning_rate=cfg.learning_rate,
        **_warmup(cfg.warmup_ratio),
        seed=cfg.seed,
        bf16=bf16,
        # In-batch negatives are only negatives if no text repeats inside a batch.
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        # The instruction goes on the query column only; passages stay raw.
        prompts={"query": instruction} if instruction else None,
        save_strategy="no",
        logging_steps=cfg.logging_steps,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )
    loss = MultipleNegativesRankingLoss(model, scale=1.0 / cfg.temperature)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
    log.info("training on %d (query, pos, %d neg) rows, %s", len(dataset), n_neg, "bf16" if bf16 else "fp32")
    trainer.train()
    return [(int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e]


def _warmup(ratio: float) -> dict:
    """transformers 5 deprecates warmup_ratio (a float warmup_steps < 1 is the ratio); 4.x needs it."""
    from importlib.metadata import version

    major = int(version("transformers").split(".")[0])
    return {"warmup_steps": ratio} if major >= 5 else {"warmup_ratio": ratio}


def truncate_queries(tokenizer, queries: list[str], max_len: int, instruction: str = "") -> list[str]:
    """Cut queries to ``max_len`` tokens (instruction and [CLS]/[SEP] included) at a token boundary
    of the original text: sentence-transformers has one max length for both sides, so the query
    limit is applied here. Returns the texts unchanged when they fit."""
    budget = max_len - tokenizer.num_special_tokens_to_add(pair=False)
    if instruction:
        budget -= len(tokenizer(instruction, add_special_tokens=False)["input_ids"])
    budget = max(budget, 1)
    cache: dict[str, str] = {}
    out = []
    for q in queries:
        if q not in cache:
            offsets = tokenizer(q, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            cache[q] = q if len(offsets) <= budget else q[: offsets[budget - 1][1]]
        out.append(cache[q])
    return out
