"""The typed jobs every entry point runs: the Python API (``TrainableModule``), the CLI commands,
``ragtune run`` stages and the UI build these same objects and call their one ``execute()``.

Each job is a :class:`~ragtune.core.config.Config` (validated on construction, serialisable to
YAML/JSON; a stage's fingerprint is its job's JSON):

- :class:`PrepareDataJob` here: training / eval files from SQuAD/CMRC rows or instruction data;
- :class:`FinetuneJob` here: a method's config (:func:`ragtune.finetune.finetune_config`, the union
  discriminated by ``method``) plus the launcher it runs under;
- ``ServeConfig`` (:mod:`ragtune.serve.server`): deploy a model on an engine -> a ``Deployment``;
- ``InferConfig`` (:mod:`ragtune.infer.runner`): predictions for an eval set;
- ``LlmEvalConfig`` / ``CompareConfig`` (:mod:`ragtune.eval`): scores and reports;
- ``RetrievalEvalConfig`` (:mod:`ragtune.eval.retrieval_eval`): embedders over a knowledge base.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SerializeAsAny, field_validator

from ..core.config import Config
from ..core.io import atomic_write_json
from ..core.log import get_logger
from ..finetune import FinetuneConfig, finetune_config
from ..launch import LauncherConfig

log = get_logger("workflow.jobs")


class PrepareDataJob(Config):
    """SQuAD/CMRC rows -> alpaca with the chapter's template (else instruction data -> messages), and
    an eval set of ``{context, question, answers}`` items (optionally a seeded sample)."""

    train: str = Field(description="Training data: SQuAD/CMRC rows, alpaca or OpenAI messages.")
    eval: str | None = Field(None, description="Eval data: SQuAD/CMRC rows or eval items.")
    template: str | None = Field(None, description="Instruction template for SQuAD rows ({context}, {question}).")
    template_lang: Literal["en", "zh"] | None = Field(None, description="Built-in template language.")
    eval_samples: int | None = Field(None, ge=1, description="Score a seeded sample of this many eval items.")
    seed: int = 0
    output: str = Field(description="Directory for train.json and eval.json.")

    def execute(self) -> dict[str, Any]:
        from .. import data as rd

        out = Path(self.output)
        summaries = []
        if _is_squad(self.train):
            summaries.append(rd.squad_to_alpaca(self.train, out / "train.json", template=self.template,
                                                template_lang=self.template_lang))
        else:
            summaries.append(rd.reformat(self.train, out / "train.json", to="messages"))
        info: dict[str, Any] = {}
        if self.eval:
            target = out / "eval_all.json"
            if _is_squad(self.eval):
                summaries.append(rd.evalset(self.eval, target))
            else:
                atomic_write_json(target, [r.data for r in rd.read_rows(self.eval)])
            items = json.loads(target.read_text(encoding="utf-8"))
            if self.eval_samples and self.eval_samples < len(items):
                idx = sorted(random.Random(self.seed).sample(range(len(items)), self.eval_samples))
                items = [items[i] for i in idx]
            atomic_write_json(out / "eval.json", items)
            info["eval_items"] = len(items)
        # what was converted and what was rejected, and why: in the stage log and beside the data
        for summary in summaries:
            log.info("%s", summary)
        info["summaries"] = [s.to_dict() for s in summaries]
        atomic_write_json(out / "summary.json", info)
        return info


def _is_squad(path: str) -> bool:
    from ..data import read_rows

    rows = read_rows(path)
    first = rows[0].data if rows else {}
    return isinstance(first, dict) and isinstance(first.get("answers"), dict) and "context" in first


class FinetuneJob(Config):
    """A fine-tune: the method's typed config and where it runs."""

    config: SerializeAsAny[FinetuneConfig] = Field(description="The method's config (method, base, train, output, ...).")
    launcher: LauncherConfig = Field(default_factory=LauncherConfig, description="local | torchrun | slurm.")

    @field_validator("config", mode="before")
    @classmethod
    def _method_config(cls, value: Any) -> Any:
        return finetune_config(value, "finetune config")

    def execute(self) -> Any:
        from .launching import launch_finetune

        cfg = self.config
        workdir = Path(str(cfg.output)).with_name(Path(str(cfg.output)).name + ".launch")
        return launch_finetune(cfg.method_object, cfg, self.launcher, workdir)
