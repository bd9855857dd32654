"""Hyper-parameters of an LLM fine-tuning job, named as LLaMA-Factory users know them.

One class is the Python API (``rt.finetune.lora(learning_rate=...)``), the CLI flags
(``--learning-rate``) and the YAML schema (``--config job.yaml``). Unknown keys are errors that name
the key and the valid ones; method-specific keys given to another method are errors too (LLaMA-Factory
silently drops them, which hides typos and wrong assumptions).
"""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from ...core.config import Config
from ...core.errors import ConfigError

METHODS = ("lora", "freeze", "full")
LORA_KEYS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target")
FREEZE_KEYS = ("freeze_trainable_layers", "freeze_trainable_modules")


class LLMFinetuneConfig(Config):
    # -- what to train on, where to write ---------------------------------------------------------
    base_model: Optional[str] = Field(None, description="Model name (bundled), local dir or HF id.")
    train: Optional[str] = Field(None, description="Training data: JSON/JSONL, alpaca or OpenAI messages.")
    output_dir: Optional[str] = Field(None, description="Run directory (adapter/, merged/, metrics.json ...).")
    method: Literal["lora", "freeze", "full"] = Field("lora", description="lora | freeze | full.")

    # -- LLaMA-Factory names ----------------------------------------------------------------------
    # Defaults = the recipe measured best on CMRC2018 with gemma-3-270m (benchmarks/cmrc_sft.py):
    # lr 2e-4 beat 1e-3 at batch 4; rank 8 and 16 were within a point.
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    cutoff_len: int = Field(1024, ge=8, description="Max tokens per sample (prompt + answer).")
    max_samples: Optional[int] = Field(None, ge=1, description="Use at most this many samples (default: all).")
    val_size: float = Field(0.0, ge=0, description="Held-out fraction (<1) or count (>=1) for eval loss.")
    per_device_train_batch_size: int = Field(4, ge=1, description="Micro-batch size per process.")
    per_device_eval_batch_size: int = Field(4, ge=1, description="Eval batch size per process.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    num_train_epochs: float = Field(1.0, gt=0, description="Epochs (fractions allowed).")
    max_steps: Optional[int] = Field(None, ge=1, description="Stop after this many optimizer steps.")
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Fraction of steps for linear warmup.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping (0 = off).")
    seed: int = Field(42, description="Seed for init, data order and dropout.")

    # -- LoRA ---------------------------------------------------------------------------------------
    lora_rank: int = Field(8, ge=1, description="LoRA rank r.")
    lora_alpha: float = Field(16, gt=0, description="LoRA scaling alpha.")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    lora_target: Union[str, list[str]] = Field(
        "all", description="'all' = every linear layer except lm_head, or module names (q_proj,v_proj).")

    # -- freeze -------------------------------------------------------------------------------------
    freeze_trainable_layers: int = Field(2, ge=1, description="Train the top N decoder layers.")
    freeze_trainable_modules: Union[str, list[str]] = Field(
        "all", description="Inside those layers: 'all' or module names (mlp, self_attn).")

    # -- prompt (the same PromptConfig serving uses) --------------------------------------------------
    system: Optional[str] = Field(None, description="System prompt used when a sample has none.")
    drop_builtin_system: bool = Field(False, description="Send an empty system prompt instead of the template's default.")
    template: Literal["auto", "chat", "plain"] = Field("auto", description="Chat template or ragtune's plain one.")

    # -- engine -------------------------------------------------------------------------------------
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description="auto = bf16 where native.")
    attn_implementation: Literal["auto", "eager", "sdpa"] = Field(
        "auto", description="auto = eager on CPU (its backward is ~1.4x faster than SDPA's there), sdpa on CUDA.")
    fast_lora: bool = Field(True, description="LoRA branch in the base dtype, fused into the base GEMM "
                            "(1.4x less time per LoRA layer on CPU); off = peft's own forward.")
    group_by_length: bool = Field(True, description="Batch samples of similar length (less padding).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    fsdp: bool = Field(False, description="FSDP sharding for full fine-tuning under torchrun on CUDA.")
    logging_steps: int = Field(10, ge=1, description="Log loss every N optimizer steps.")
    eval_steps: Optional[int] = Field(None, ge=1, description="Eval loss every N steps (default: end of each epoch).")
    save_steps: Optional[int] = Field(None, ge=1, description="Checkpoint every N steps (always at the end).")
    save_total_limit: Optional[int] = Field(2, ge=1, description="Keep only the newest N checkpoints.")
    resume: bool = Field(False, description="Continue from the last checkpoint in output_dir/checkpoints.")
    merge: bool = Field(True, description="Also write merged full weights to output_dir/merged.")
    tokenize_cache: bool = Field(True, description="Cache tokenized data on disk.")
    overwrite_output_dir: bool = Field(False, description="Allow writing into a non-empty output_dir.")

    @field_validator("lora_target", "freeze_trainable_modules", mode="before")
    @classmethod
    def _split_commas(cls, value):
        if isinstance(value, str) and "," in value:
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)) and len(value) == 1 and value[0] == "all":
            return "all"
        return value

    @model_validator(mode="after")
    def _method_keys(self):
        given = self.model_fields_set
        foreign = {"lora": FREEZE_KEYS, "freeze": LORA_KEYS, "full": LORA_KEYS + FREEZE_KEYS}[self.method]
        bad = [k for k in foreign if k in given]
        if bad:
            raise ValueError(f"{', '.join(bad)} do(es) not apply to method '{self.method}'")
        return self

    def require_paths(self) -> None:
        missing = [k for k in ("base_model", "train", "output_dir") if not getattr(self, k)]
        if missing:
            raise ConfigError(f"missing required setting(s): {', '.join(missing)}",
                              hint="CLI: --base M --train F --output DIR; Python: finetune(base, train, output)")

    def prompt_config(self):
        from ...core.prompt import PromptConfig

        return PromptConfig(system=self.system, drop_builtin_system=self.drop_builtin_system,
                            template=self.template)
