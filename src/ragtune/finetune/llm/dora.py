"""DoRA (weight-decomposed low-rank adaptation, Liu et al. 2024): LoRA whose update also learns a
per-output-channel magnitude, through peft's ``use_dora``. Everything else is LoRA's: same keys,
same trainer, same adapter files (``ragtune serve`` and the engines load them like any adapter)."""
from __future__ import annotations

from typing import Literal

from ..base import METHODS
from .config import LoraConfig
from .methods import LoraMethod


class DoraConfig(LoraConfig):
    method: Literal["dora"] = "dora"  # type: ignore[assignment]


class DoraMethod(LoraMethod):
    name = "dora"
    config_cls = DoraConfig
    description = "DoRA: LoRA plus a learned magnitude per output channel (peft use_dora)"

    def peft_config(self, cfg, targets):
        lcfg = super().peft_config(cfg, targets)
        lcfg.use_dora = True
        return lcfg

    def after_prepare(self, cfg, model):
        """No fast LoRA path: DoRA's forward normalises by the adapted weight's norm, which peft's own
        forward does."""


dora = METHODS.register("dora", DoraMethod())
