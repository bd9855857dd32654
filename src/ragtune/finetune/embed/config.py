"""The one config of an embedding fine-tune: Python API, ``ragtune finetune embed`` flags and YAML."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..base import FinetuneConfig


class EmbedFinetuneConfig(FinetuneConfig):
    method: Literal["embedding", "flagembedding"] = Field(
        "embedding", description="embedding (sentence-transformers) or flagembedding (BAAI FlagEmbedding).")
    trainer: Literal["ragtune", "sentence_transformers"] = Field(
        "ragtune", description="embedding method: ragtune's length-bucketed loop (faster on CPUs, see "
        "BENCHMARKS.md) or sentence-transformers' SentenceTransformerTrainer.")
    base: str | None = Field("all-MiniLM-L6-v2", description="Base embedder: bundled name, local dir or HF id.")
    train: str | None = Field(None, description="Training file (.jsonl/.json): {query, pos:[..], neg:[..], prompt?}.")
    output: str | None = Field(None, description="Output dir: the tuned sentence-transformers model + metrics.json.")
    num_train_epochs: float = Field(1.0, gt=0, description="Epochs over the training pairs.")
    per_device_train_batch_size: int = Field(32, ge=2, description="Queries per batch (in-batch negatives).")
    learning_rate: float = Field(2e-5, gt=0, description="Peak learning rate.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps for linear warmup.")
    temperature: float = Field(0.05, gt=0, description="Softmax temperature of the contrastive loss (scale = 1/temperature).")
    train_group_size: int = Field(2, ge=1, description="Passages per query: 1 positive + (N-1) negatives from 'neg'.")
    query_max_len: int = Field(64, ge=8, description="Max query tokens.")
    passage_max_len: int = Field(256, ge=8, description="Max passage tokens.")
    query_instruction: str | None = Field(
        None, description="Prefix for queries only (None: the records' 'prompt' field; '' : none). Saved with the model.")
    eval_file: str | None = Field(None, description="Held-out eval file {query, corpus:[..]}; default: split from train.")
    eval_split: float = Field(0.1, ge=0, lt=1, description="Share of train records held out when no eval_file is given.")
    eval_ks: list[int] = Field([1, 5, 10, 100], description="k values for recall@k / MRR@k / NDCG@k.")
    eval_corpus: Literal["all", "eval"] = Field(
        "all", description="Passages to retrieve from in evaluations: all (the eval passages plus every "
        "training passage as a distractor) or eval (the eval passages only: easier, optimistic).")
    eval_steps: int | None = Field(None, ge=1, description="ragtune trainer: score the dev slice every N steps "
                                   "(and at the end) and keep the best weights; None: only base and final.")
    eval_metric: str = Field("ndcg@10", description="Dev metric that picks the kept weights (recall@k, mrr@k, ndcg@k).")
    dev_queries: int = Field(300, ge=1, description="Held-out queries scored during training (a seeded subset of the eval set).")
    time_budget_minutes: float | None = Field(
        None, gt=0, description="ragtune trainer: fit the run (dev evaluations included) into this many "
        "minutes; the step count is re-planned from the measured speed and the learning rate decays to 0 at the end.")
    max_steps: int | None = Field(None, ge=1, description="Stop after N optimizer steps (before the epochs end).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (0, as the Hugging Face trainer's default).")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0: none).")
    dropout: bool = Field(True, description="ragtune trainer: keep the model's dropout on while training "
                          "(False: no dropout masks, ~20% faster on a CPU and deterministic).")
    matryoshka_dims: list[int] | None = Field(
        None, description="ragtune trainer: also train these leading dimensions (Matryoshka loss), e.g. [384, 128, 64].")
    max_samples: int | None = Field(None, ge=1, description="Use a seeded random N of the training records (logged, never silent).")
    dtype: str = Field("auto", description="auto (bf16 where native) | bf16 | fp32.")
    seed: int = Field(42, description="Seed for the split, the negatives fill and the shuffling.")
    logging_steps: int = Field(10, ge=1, description="Log the loss every N steps.")
    nproc_per_node: int = Field(1, ge=1, description="flagembedding backend: processes (GPUs) per node for torchrun.")
    pooling: Literal["auto", "cls", "mean", "last_token"] = Field(
        "auto", description="flagembedding backend: sentence pooling; auto = the base model's own (else cls, as bge).")

    @property
    def backend(self) -> str:
        return "flagembedding" if self.method == "flagembedding" else "sentence_transformers"

    @model_validator(mode="after")
    def _ragtune_trainer_options_only_there(self) -> "EmbedFinetuneConfig":
        """Options only ragtune's trainer has are errors elsewhere, never silently ignored."""
        other = "method flagembedding" if self.method == "flagembedding" else (
            "trainer sentence_transformers" if self.trainer == "sentence_transformers" else None)
        if other is None:
            return self
        used = [k for k in ("eval_steps", "time_budget_minutes", "matryoshka_dims") if getattr(self, k) is not None]
        used += ["dropout"] if not self.dropout else []
        # by value, not by "was it given": a saved config (every field written) must load again
        used += ["trainer"] if self.method == "flagembedding" and self.trainer != "ragtune" else []
        if used:
            raise ValueError(f"{', '.join(used)}: only ragtune's trainer (method embedding, trainer ragtune) "
                             f"has {'this' if len(used) == 1 else 'these'}; {other} would ignore it")
        return self

    @field_validator("eval_metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        name, _, k = v.partition("@")
        if name not in ("recall", "mrr", "ndcg") or not k.isdigit() or int(k) < 1:
            raise ValueError(f"eval_metric must look like recall@1, mrr@10 or ndcg@10, got {v!r}")
        return v

    @field_validator("matryoshka_dims")
    @classmethod
    def _positive_dims(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or min(v) < 1):
            raise ValueError("matryoshka_dims must hold positive integers")
        return v

    @field_validator("eval_ks")
    @classmethod
    def _positive_ks(cls, v: list[int]) -> list[int]:
        v = sorted({int(k) for k in v})
        if not v or v[0] < 1:
            raise ValueError("eval_ks must hold positive integers")
        return v
