"""Hyper-parameters of LLM fine-tuning, named as LLaMA-Factory users know them.

:class:`LLMFinetuneConfig` holds what every LLM method shares; each method adds its own keys in its
own subclass (:class:`LoraConfig`, :class:`FreezeConfig`, :class:`FullConfig`), so a LoRA key given
to method freeze is an unknown key, not a silently dropped one (LLaMA-Factory drops them). One
class is the Python API (``rt.finetune.lora(learning_rate=...)``), the CLI flags
(``--learning-rate``) and the YAML schema (``--config job.yaml``).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ...core.prompt import PromptConfig
from ..base import FinetuneConfig


class LLMFinetuneConfig(FinetuneConfig):
    """Settings shared by every LLM method."""

    # -- LLaMA-Factory names ----------------------------------------------------------------------
    # Defaults = the recipe measured best on CMRC2018 with gemma-3-270m (benchmarks/cmrc_sft.py):
    # lr 2e-4 beat 1e-3 at batch 4; rank 8 and 16 were within a point.
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    cutoff_len: int = Field(1024, ge=8, description="Max tokens per sample (prompt + answer).")
    max_samples: int | None = Field(None, ge=1, description="Use at most this many samples (default: all).")
    val_size: float = Field(0.0, ge=0, description="Held-out fraction (<1) or count (>=1) for eval loss.")
    val_split: Literal["prompt_group", "record"] = Field(
        "prompt_group", description="prompt_group: hold out whole groups of records that share a prompt prefix "
        "(a passage and all its questions; at least val_size records), so eval loss and dev metrics measure unseen "
        "passages; record: single records.")
    per_device_train_batch_size: int = Field(4, ge=1, description="Micro-batch size per process.")
    per_device_eval_batch_size: int = Field(4, ge=1, description="Eval batch size per process.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    num_train_epochs: float = Field(1.0, gt=0, description="Epochs (fractions allowed).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Fraction of steps for linear warmup.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping (0 = off).")

    # -- prompt (the same PromptConfig serving uses) --------------------------------------------------
    prompt: PromptConfig = Field(default_factory=PromptConfig,
                                 description="System prompt / template choice, saved with the model for serving.")

    # -- engine -------------------------------------------------------------------------------------
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description="auto = bf16 where native.")
    attn_implementation: Literal["auto", "eager", "sdpa"] = Field(
        "auto", description="auto = eager on CPU (its backward is ~1.4x faster than SDPA's there), sdpa on CUDA.")
    group_by_length: bool = Field(True, description="Batch samples of similar length (less padding).")
    pack_shared_prefix: bool = Field(True, description="Train records that share a prompt prefix (a passage with "
                                     "several questions) as one sequence: the prefix once, each record's rest as a branch.")
    pack_min_prefix: int = Field(32, ge=1, description="Shared prompt tokens needed to pack records together.")
    pack_max_len: int | None = Field(None, ge=8, description="Longest packed sequence (default: 2 x cutoff_len).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    logging_steps: int = Field(10, ge=1, description="Log loss every N optimizer steps.")
    eval_steps: int | None = Field(None, ge=1, description="Eval loss every N steps (default: end of each epoch).")
    eval_minutes: float | None = Field(None, gt=0, description="Also evaluate when this many minutes of training "
                                          "passed since the last eval (with a time budget, steps are not known ahead).")
    save_steps: int | None = Field(None, ge=1, description="Checkpoint every N steps (always at the end).")
    save_minutes: float | None = Field(10.0, gt=0, description="Also checkpoint when this many minutes passed since "
                                          "the last one, so a killed long run loses minutes (None: steps only).")
    save_total_limit: int | None = Field(2, ge=1, description="Keep only the newest N checkpoints.")
    dev_metrics: list[str] = Field(default_factory=list, description="Task metrics decoded on a held-out slice at "
                                   "every eval (e.g. exact, cmrc_f1): logged, plotted, and the first one keeps the best checkpoint.")
    dev_file: str | None = Field(None, description="Eval items for the dev metrics (default: the val_size split).")
    dev_samples: int = Field(200, ge=1, description="Seeded slice of the dev items decoded at each eval.")
    dev_max_tokens: int = Field(64, ge=1, description="New tokens per dev item (greedy).")
    dev_batch_size: int = Field(16, ge=1, description="Dev items per batched generate.")
    dev_extractive: Literal["off", "vocab", "span"] = Field(
        "off", description="Decode the dev items extractively (see `ragtune infer --extractive`).")
    keep_best: bool = Field(True, description="With dev metrics: the saved model is the best eval's, not the last.")
    early_stopping_patience: int | None = Field(None, ge=1, description="Stop after this many evals without a "
                                                   "better dev metric.")
    time_budget: str | None = Field(None, description="Wall-clock training budget (e.g. 60m, 1.5h, 900s): steps "
                                       "are planned from the measured speed to finish, evaluate and save in time.")
    resume: bool | Literal["auto"] = Field(
        False, description="Continue from the newest valid checkpoint in output/checkpoints: true (refuse other "
                           "data or settings), auto (start over when they changed), false.")
    merge: bool = Field(True, description="Also write merged full weights to output/merged.")
    tokenize_cache: bool = Field(True, description="Cache tokenized data on disk.")
    overwrite_output_dir: bool = Field(False, description="Allow writing into a non-empty output dir.")

    @field_validator("val_size")
    @classmethod
    def _whole_count(cls, value: float) -> float:
        if value >= 1 and value != int(value):
            raise ValueError(f"{value} is neither a fraction (< 1) nor a whole number of samples")
        return value

    def prompt_config(self) -> PromptConfig:
        return self.prompt

    @field_validator("dev_metrics")
    @classmethod
    def _known_metrics(cls, names: list[str]) -> list[str]:
        from .dev import check_metrics

        check_metrics(names)
        return names

    @field_validator("time_budget")
    @classmethod
    def _budget(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @property
    def time_budget_seconds(self) -> float | None:
        return parse_duration(self.time_budget) if self.time_budget else None


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``60m``, ``1.5h`` -> seconds."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration; use e.g. 900s, 60m or 1.5h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _split_commas(value):
    if isinstance(value, str) and "," in value:
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)) and len(value) == 1 and value[0] == "all":
        return "all"
    return value


class LoraSettings(LLMFinetuneConfig):
    """LoRA keys (also used by LLaMA-Factory's lora type)."""
    lora_rank: int = Field(8, ge=1, description="LoRA rank r.")
    lora_alpha: float = Field(16, gt=0, description="LoRA scaling alpha.")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    lora_target: str | list[str] = Field(
        "all", description="'all' = every linear layer except lm_head, or module names (q_proj,v_proj).")

    @field_validator("lora_target", mode="before")
    @classmethod
    def _target_list(cls, value):
        return _split_commas(value)


class LoraConfig(LoraSettings):
    method: Literal["lora"] = "lora"
    fast_lora: bool = Field(True, description="LoRA branch in the base dtype, fused into the base GEMM "
                            "(1.4x less time per LoRA layer on CPU); off = peft's own forward.")


class FreezeConfig(LLMFinetuneConfig):
    method: Literal["freeze"] = "freeze"
    freeze_trainable_layers: int = Field(2, ge=1, description="Train the top N decoder layers.")
    freeze_trainable_modules: str | list[str] = Field(
        "all", description="Inside those layers: 'all' or module names (mlp, self_attn).")

    @field_validator("freeze_trainable_modules", mode="before")
    @classmethod
    def _modules_list(cls, value):
        return _split_commas(value)


class FullConfig(LLMFinetuneConfig):
    method: Literal["full"] = "full"
    fsdp: bool = Field(False, description="FSDP sharding under torchrun on CUDA.")
    train_embeddings: bool = Field(True, description="Also train the token embeddings (and a head tied to them); "
                                   "false: every other weight (for a 262k vocabulary, most of the model stays frozen).")
