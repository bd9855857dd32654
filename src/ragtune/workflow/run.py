"""``ragtune run CONFIG.yaml``: data -> fine-tune -> infer (base, tuned, remote baselines) -> eval ->
compare report, as resumable stages in one run directory (see :mod:`ragtune.workflow.stages`).

A re-run skips every stage whose config and input files are unchanged; a stage killed half-way
runs again, and the fine-tune stage then continues from its last checkpoint.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from ..core.config import Config
from ..core.errors import ConfigError
from ..core.log import get_logger
from ..launch import LauncherConfig
from .stages import Stage, StageContext, StageRunner

log = get_logger(__name__)


class DataSection(Config):
    train: str = Field(description="Training data: SQuAD/CMRC rows, alpaca or OpenAI messages (JSON/JSONL/CSV/Parquet).")
    eval: Optional[str] = Field(None, description="Eval data: SQuAD/CMRC rows or eval items {context, question, answers}.")
    template: Optional[str] = Field(None, description="Instruction template for SQuAD rows ({context}, {question}).")
    template_lang: Optional[Literal["en", "zh"]] = Field(None, description="Built-in template language.")
    eval_samples: Optional[int] = Field(None, ge=1, description="Score a seeded sample of this many eval items.")


class LLMSection(Config):
    base: str = Field(description="Base LLM: bundled name, local dir or HF id.")
    method: str = Field("lora", description="lora | freeze | full | llamafactory.")
    finetune: dict[str, Any] = Field(default_factory=dict, description="Hyper-parameters of the method.")
    prompt: dict[str, Any] = Field(default_factory=dict, description="system, drop_builtin_system, template.")
    deploy: Literal["builtin", "vllm"] = Field("builtin", description="Serving engine for inference.")
    deploy_params: dict[str, Any] = Field(default_factory=dict, description="Serve settings (max_batch_size...).")
    infer: dict[str, Any] = Field(default_factory=lambda: {"max_tokens": 64},
                                  description="Inference settings (max_tokens, batch_size, ...).")
    evaluate_base: bool = Field(True, description="Also infer + score the untuned base model.")


class EvalSection(Config):
    metrics: list[str] = Field(["exact", "cosine", "origin"], description="Generation metrics.")
    embed: str = Field("all-MiniLM-L6-v2", description="Embedder of the cosine metric.")
    origin_tokenizer: Literal["auto", "jieba", "char", "whitespace"] = "auto"
    exact_mode: Literal["strict", "lenient", "both"] = "both"


class Baseline(Config):
    name: str = Field(description="Label in the report, e.g. deepseek-v3.")
    url: str = Field(description="OpenAI-compatible base URL.")
    model: Optional[str] = Field(None, description="Model name at the URL.")
    api_key_env: Optional[str] = Field(None, description="Environment variable holding the API key.")


class RunConfig(Config):
    run_dir: str = Field(description="Where every stage writes its config, log and outputs.")
    seed: int = 0
    data: DataSection
    llm: Optional[LLMSection] = None
    eval: EvalSection = Field(default_factory=EvalSection)
    baselines: list[Baseline] = Field(default_factory=list)
    launcher: LauncherConfig = Field(default_factory=LauncherConfig)

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if self.llm is None:
            raise ConfigError("the config has no 'llm' section: nothing to run")
        from .. import finetune as ft

        method = ft.get_method(self.llm.method)
        placeholders = {"base_model": "-", "train": "-", "output_dir": "-"}
        try:
            method.config(**placeholders, **self.llm.finetune)
        except ConfigError as exc:
            raise ConfigError(f"llm.finetune: {exc.message}", hint=exc.hint) from None
        return self


# -- stage bodies -----------------------------------------------------------------------------------
def _is_squad(path: str) -> bool:
    from ..data import read_records

    rows = read_records(path)
    first = rows[0].data if rows and hasattr(rows[0], "data") else (rows[0] if rows else {})
    return isinstance(first, dict) and isinstance(first.get("answers"), dict) and "context" in first


def prepare_data(ctx: StageContext) -> None:
    from .. import data as rd
    from ..core.io import atomic_write_json

    c = ctx.config
    if _is_squad(c["train"]):
        summary = rd.squad_to_alpaca(c["train"], ctx.dir / "train.json", template=c.get("template"),
                                     template_lang=c.get("template_lang"))
        ctx.logger.info("train: %s", summary)
    else:
        ctx.logger.info("train: %s", rd.reformat(c["train"], ctx.dir / "train.json", to="messages"))
    if c.get("eval"):
        target = ctx.dir / "eval_all.json"
        if _is_squad(c["eval"]):
            rd.evalset(c["eval"], target)
        else:
            atomic_write_json(target, json.loads(Path(c["eval"]).read_text(encoding="utf-8")))
        items = json.loads(target.read_text(encoding="utf-8"))
        if c.get("eval_samples") and c["eval_samples"] < len(items):
            idx = sorted(random.Random(c["seed"]).sample(range(len(items)), c["eval_samples"]))
            items = [items[i] for i in idx]
        atomic_write_json(ctx.dir / "eval.json", items)
        ctx.logger.info("eval items: %d", len(items))


def finetune_llm(ctx: StageContext) -> None:
    from .. import finetune as ft
    from .launching import launch_finetune

    c = ctx.config
    method = ft.get_method(c["method"])
    params = {**c["finetune"], "base_model": c["base"], "train": c["train"], "output_dir": str(ctx.dir / "model")}
    for key in ("system", "drop_builtin_system"):
        if key in c["prompt"]:
            params.setdefault(key, c["prompt"][key])
    if (ctx.dir / "model" / "checkpoints").exists():
        params.setdefault("resume", True)           # a killed run continues from its last checkpoint
        ctx.logger.info("resuming fine-tune from %s", ctx.dir / "model" / "checkpoints")
    cfg = method.config(**params)
    launch_finetune(method, cfg, ctx.config["launcher"], ctx.dir)


def infer_stage(ctx: StageContext) -> None:
    from ..infer.runner import InferConfig, run_infer

    c = ctx.config
    values = {"evalset": c["evalset"], "output": str(ctx.dir / "predictions.json"), **c["infer"],
              **{k: v for k, v in c["prompt"].items() if k in ("system", "drop_builtin_system")}}
    if c.get("url"):
        values.update(url=c["url"], remote_model=c.get("model"))
        if c.get("api_key_env"):
            values["api_key"] = os.environ.get(c["api_key_env"])
            if not values["api_key"]:
                raise ConfigError(f"environment variable {c['api_key_env']} (baseline {c['name']}) is not set")
        run_infer(InferConfig.build(**values))
        return
    if c["deploy"] == "vllm":
        from ..serve.deploy import get_deploy_method

        with get_deploy_method("vllm")(**c["deploy_params"]).deploy(c["model"], prompt=c["prompt"]) as dep:
            run_infer(InferConfig.build(**values, url=dep.url))
        return
    run_infer(InferConfig.build(**values, model=c["model"]))


def eval_stage(ctx: StageContext) -> None:
    import shutil

    from ..eval.runner import evaluate_llm

    c = ctx.config
    run = evaluate_llm(evalset=c["evalset"], predictions=c["predictions"], output=str(ctx.dir / "runs"),
                       name=c["name"], **c["eval"])
    target = ctx.dir / "result"
    if target.exists():
        shutil.rmtree(target)
    os.replace(run.path, target)


def report_stage(ctx: StageContext) -> None:
    from ..eval.report import compare_runs
    from ..core.io import atomic_write_text

    paths = compare_runs(ctx.config["runs"], ctx.dir)
    atomic_write_text(ctx.dir / "report.md", Path(paths["markdown"]).read_text(encoding="utf-8"))
    atomic_write_text(ctx.dir / "report.html", Path(paths["html"]).read_text(encoding="utf-8"))


# -- the chain ----------------------------------------------------------------------------------------
def build_stages(cfg: RunConfig) -> list[Stage]:
    run = Path(cfg.run_dir)
    llm = cfg.llm
    data_cfg = {**cfg.data.to_dict(), "seed": cfg.seed}
    stages = [Stage("prepare_data", prepare_data, data_cfg,
                    inputs=[p for p in (cfg.data.train, cfg.data.eval) if p],
                    outputs=["train.json"] + (["eval.json"] if cfg.data.eval else []))]
    train_file = str(run / "prepare_data" / "train.json")
    stages.append(Stage("finetune_llm", finetune_llm,
                        {"base": llm.base, "method": llm.method, "finetune": llm.finetune, "prompt": llm.prompt,
                         "train": train_file, "launcher": cfg.launcher.to_dict()},
                        inputs=[train_file], outputs=["model/ragtune_finetune.json"]))
    if not cfg.data.eval:
        return stages
    evalset = str(run / "prepare_data" / "eval.json")
    tuned = str(run / "finetune_llm" / "model")
    models: list[tuple[str, dict[str, Any], list[str]]] = []
    common = {"evalset": evalset, "infer": llm.infer, "prompt": llm.prompt, "deploy": llm.deploy,
              "deploy_params": llm.deploy_params}
    if llm.evaluate_base:
        models.append(("base", {**common, "model": llm.base}, [evalset]))
    models.append(("tuned", {**common, "model": tuned}, [evalset, tuned]))
    for b in cfg.baselines:
        models.append((b.name, {**common, "url": b.url, "model": b.model, "api_key_env": b.api_key_env,
                                "name": b.name}, [evalset]))
    eval_dirs = []
    for name, infer_cfg, inputs in models:
        stages.append(Stage(f"infer_{name}", infer_stage, infer_cfg, inputs=inputs, outputs=["predictions.json"]))
        preds = str(run / f"infer_{name}" / "predictions.json")
        stages.append(Stage(f"eval_{name}", eval_stage,
                            {"evalset": evalset, "predictions": preds, "name": name, "eval": cfg.eval.to_dict()},
                            inputs=[evalset, preds], outputs=["result/summary.json"]))
        eval_dirs.append(str(run / f"eval_{name}" / "result"))
    stages.append(Stage("report", report_stage, {"runs": eval_dirs}, inputs=eval_dirs,
                        outputs=["report.md", "report.html"]))
    return stages


def run_config(cfg: RunConfig, force: list[str] | tuple[str, ...] = ()) -> StageRunner:
    stages = build_stages(cfg)
    names = [s.name for s in stages]
    unknown = [f for f in force if f not in names]
    if unknown:
        raise ConfigError(f"--force: unknown stage(s) {unknown}; stages of this config: {', '.join(names)}")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.yaml")
    runner = StageRunner(run_dir, force=force)
    for stage in stages:
        runner.run(stage)
    return runner
