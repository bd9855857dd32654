"""The task metric during training: greedy-decode a seeded held-out slice through the same engine
and prompt builder as ``ragtune infer``, score it with ragtune's metrics (exact, cmrc_f1, ...).

The loss says how well the model predicts the reference tokens; the dev metric says whether its
answers are right, which is what the best checkpoint and early stopping should follow. The slice
comes from the validation split of the training file (records never trained on), or from an eval
set file (``dev_file``, the items ``ragtune infer`` reads).
"""
from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...core.errors import ConfigError
from ...core.log import get_logger

log = get_logger(__name__)


@dataclass
class DevItem:
    kind: str                     # "chat" | "raw" (infer.runner.item_input)
    prompt: Any                   # messages or raw text
    reference: str
    answers: list[str]
    context: str


def from_conversations(convs: Sequence[list[dict]]) -> list[DevItem]:
    """Held-out training records: the prompt is the conversation up to its last answer."""
    items = []
    for conv in convs:
        user = next((m["content"] for m in reversed(conv[:-1]) if m["role"] == "user"), "")
        items.append(DevItem("chat", conv[:-1], conv[-1]["content"], [conv[-1]["content"]], user))
    return items


def from_eval_file(path: str, template: str | None = None) -> list[DevItem]:
    from ...eval.data import load_evalset
    from ...infer.runner import item_input
    from ...infer.runner import load_evalset as load_raw

    raw = load_raw(path)
    scored = load_evalset(path)
    items = []
    for i, (row, ev) in enumerate(zip(raw, scored)):
        kind, prompt = item_input(row, template, file=path, record=i)
        items.append(DevItem(kind, prompt, ev.reference, ev.all_answers or [ev.reference], ev.context))
    return items


def seeded_slice(items: list[DevItem], n: int, seed: int) -> list[DevItem]:
    if len(items) <= n:
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


def check_metrics(names: Sequence[str]) -> None:
    from ...eval.base import METRICS

    for name in names:
        METRICS.get(name)   # unknown names fail at configuration time, listing the valid ones


class DevEvaluator:
    """Decodes the dev slice with the live model (no copy: the weights being trained) and scores it."""

    def __init__(self, items: list[DevItem], metrics: Sequence[str], prompt: Any, max_tokens: int,
                 batch_size: int, extractive: str = "off"):
        from ...eval.base import get_metric

        self.items, self.prompt, self.max_tokens, self.batch_size = items, prompt, max_tokens, batch_size
        self.extractive = extractive
        self.metrics = [get_metric(n) for n in metrics]
        self.seconds = 0.0

    def run(self, model: Any, tokenizer: Any) -> dict[str, float | None]:
        import torch

        from ...engine.base import SamplingParams
        from ...engine.builtin import BuiltinEngine
        from ...eval.base import EvalItem, aggregate

        started = time.perf_counter()
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        was_training = model.training
        model.eval()
        engine = BuiltinEngine(inner, tokenizer, name="dev", prompt=self.prompt, max_batch_size=self.batch_size)
        try:
            ids = [engine.encode_text(it.prompt) if it.kind == "raw" else engine.encode_chat(it.prompt)
                   for it in self.items]
            constraints = None
            if self.extractive != "off":
                from ...engine.extractive import build_constraint

                constraints = [build_constraint(tokenizer, it.context, self.extractive, engine.eos_ids)
                               for it in self.items]
            params = SamplingParams(max_tokens=self.max_tokens)
            if any(it.kind != "raw" for it in self.items):
                params = engine.chat_params(params)   # the plain template's markers end an answer
            with torch.no_grad():
                outs = engine.generate_ids(ids, params, constraints=constraints)
        finally:
            if was_training:
                model.train()
        scored = [EvalItem(question="", context=it.context, reference=it.reference, prediction=o.text.strip(),
                           all_answers=it.answers) for it, o in zip(self.items, outs)]
        result: dict[str, float | None] = {}
        for metric in self.metrics:
            mean = aggregate(metric.score_batch(scored)).mean
            result[metric.name] = round(mean, 6) if mean is not None else None
        self.seconds = time.perf_counter() - started
        return result


def select(dev: dict[str, float | None], metric: str) -> float:
    value = dev.get(metric)
    if value is None:
        raise ConfigError(f"dev metric '{metric}' gave no value (no item could be scored)")
    return float(value)
