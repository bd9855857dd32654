"""``ragtune run CONFIG.yaml``: data -> fine-tune -> infer (base, tuned, remote baselines) -> eval ->
compare report, as resumable stages in one run directory (see :mod:`ragtune.workflow.stages`).

The config is typed at every level: a mistyped key anywhere (``llm.prompt.sytem``,
``llm.infer.max_tokenz``, ``llm.deploy_params.bogus``, ``llm.finetune.lora_rnk``, ``eval.metrics``)
fails when the file is read, before any stage runs, naming the key path, the closest valid key and
the valid keys. Each stage is a typed job (:mod:`ragtune.workflow.jobs`) whose JSON is the stage's
fingerprint: a re-run skips every stage whose job and input files are unchanged.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, PrivateAttr, Tag, field_validator, model_validator

from ..core.config import Config
from ..core.errors import ConfigError
from ..core.log import get_logger
from ..core.prompt import PromptConfig
from ..engine.base import ENGINES, engine_settings
from ..engine.client import ServerUrl
from ..eval.report import CompareConfig
from ..eval.runner import LlmEvalConfig, MetricOptions, metric_specs
from ..finetune import PATH_FIELDS, finetune_config
from ..infer.runner import InferConfig, InferSettings
from ..launch import LauncherConfig
from . import docs_run
from .docs_run import DocsSection, EmbedSection
from .jobs import FinetuneJob, PrepareDataJob
from .stages import Stage, StageRunner

log = get_logger(__name__)


class DataSection(Config):
    train: str = Field(description="Training data: SQuAD/CMRC rows, alpaca or OpenAI messages (JSON/JSONL/CSV/Parquet).")
    eval: str | None = Field(None, description="Eval data: SQuAD/CMRC rows or eval items {context, question, answers}.")
    template: str | None = Field(None, description="Instruction template for SQuAD rows ({context}, {question}).")
    template_lang: Literal["en", "zh"] | None = Field(None, description="Built-in template language.")
    eval_samples: int | None = Field(None, ge=1, description="Score a seeded sample of this many eval items.")


class LLMSection(Config):
    base: str = Field(description="Base LLM: bundled name, local dir or HF id.")
    method: str = Field("lora", description="Fine-tune method (lora | freeze | full | llamafactory | ...).")
    finetune: dict[str, Any] = Field(default_factory=dict, description="Hyper-parameters of the method (validated by its config).")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="system, drop_builtin_system, template.")
    deploy: str = Field("builtin", description="Engine used for inference (builtin | vllm | llamacpp | ...).")
    deploy_params: dict[str, Any] = Field(default_factory=dict, description="The engine's settings (validated by it).")
    infer: InferSettings = Field(default_factory=lambda: InferSettings(max_tokens=64),
                                 description="Inference settings (max_tokens, batch_size, ...).")
    evaluate_base: bool = Field(True, description="Also infer + score the untuned base model.")

    @field_validator("deploy")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        if value not in ENGINES:
            raise ValueError(ENGINES.unknown_message(value))
        return value

    @model_validator(mode="after")
    def _typed_sections(self) -> "LLMSection":
        given = sorted(set(PATH_FIELDS) & set(self.finetune))
        if given:
            raise ConfigError(f"llm.finetune: {given} are set by the run (llm.base, the prepared data and the "
                              "stage directory); remove them")
        for bad in ("method", "prompt"):
            if bad in self.finetune:
                raise ConfigError(f"llm.finetune.{bad}: set it as llm.{bad}")
        self.finetune_config("<placeholder>", "<placeholder>")   # every key checked now
        engine_settings(self.deploy, self.deploy_params, "llm.deploy_params")
        return self

    def finetune_config(self, train: str, output: str, **extra: Any):
        return finetune_config({"method": self.method, "base": self.base, "train": train, "output": output,
                                "prompt": self.prompt, **self.finetune, **extra}, "llm.finetune")


class EvalSection(MetricOptions):
    """Metrics and their shared options (see ``ragtune eval llm``)."""
    exact_mode: Literal["strict", "lenient", "both"] = Field("both", description="exact match: strict, lenient or both.")


class Baseline(Config):
    name: str = Field(description="Label in the report, e.g. deepseek-v3.")
    url: ServerUrl = Field(description="OpenAI-compatible base URL.")
    model: str | None = Field(None, description="Model name at the URL.")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key.")


class RunConfig(Config):
    run_dir: str = Field(description="Where every stage writes its config, log and outputs.")
    seed: int = 0
    data: Annotated[Annotated[DataSection, Tag("files")] | Annotated[DocsSection, Tag("docs")],
                    Discriminator(docs_run.source_tag)]
    llm: LLMSection
    embed: EmbedSection | None = Field(None, description="Embedder of a documents run (base, method, finetune, topk).")
    eval: EvalSection = Field(default_factory=EvalSection)
    baselines: list[Baseline] = Field(default_factory=list)
    launcher: LauncherConfig = Field(default_factory=LauncherConfig)
    _source: str | None = PrivateAttr(None)      # the YAML file it was read from, for hints

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, /, **overrides: Any):
        cfg = super().from_yaml(path, **overrides)
        cfg._source = os.fspath(path)
        return cfg

    @field_validator("data", mode="before")
    @classmethod
    def _data_source(cls, value: Any) -> Any:
        return docs_run.data_source(value)

    @model_validator(mode="after")
    def _source_sections(self) -> "RunConfig":
        docs_run.check_sections(self)
        return self

    def preflight(self, stages: list[Stage] | None = None) -> None:
        """Checks that need the machine, run before the first stage: every input file of every stage
        that no earlier stage writes exists (the error names its key path, and the command the
        config's comments give for making it), the embedder of the metrics resolves, baseline keys
        are set."""
        from ..models import resolve_model

        check_stage_inputs(self, build_stages(self) if stages is None else stages)
        if isinstance(self.data, DocsSection):
            return docs_run.preflight(self)

        if self.data.eval:
            for name, params in metric_specs(self.eval):
                if "embed" in params:
                    try:
                        resolve_model(params["embed"], kind="embedding")
                    except Exception as exc:
                        raise ConfigError(f"eval.embed ({name}): {exc}") from None
        for b in self.baselines:
            if b.api_key_env and not os.environ.get(b.api_key_env):
                raise ConfigError(f"baselines[{b.name}].api_key_env: environment variable {b.api_key_env} is not set")


def _key_paths(value: Any, target: str, prefix: str = "") -> list[str]:
    """Dotted key paths in a config dump whose value is ``target``."""
    if isinstance(value, dict):
        return [k for key, v in value.items() for k in _key_paths(v, target, f"{prefix}{key}.")]
    if isinstance(value, list):
        return [k for i, v in enumerate(value) for k in _key_paths(v, target, f"{prefix.rstrip('.')}[{i}].")]
    return [prefix.rstrip(".")] if isinstance(value, str) and value == target else []


def _comment_commands(source: str | None, missing: str) -> list[str]:
    """Commands in backticks in the YAML's comments that mention the missing file's folder: what the
    config's author wrote for making it (``# make it first with `ragtune data manuals DIR```)."""
    if not source:
        return []
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError:
        return []
    parts = Path(missing).parts
    roots = {p for p in (parts[0] if parts else "", str(Path(missing).parent)) if p not in ("", ".", "..", "/")}
    found: list[str] = []
    for line in text.splitlines():
        comment = line.split("#", 1)[1] if "#" in line else ""
        for cmd in comment.split("`")[1::2]:
            if any(r in cmd for r in roots) and cmd not in found:
                found.append(cmd)
    return found


def check_stage_inputs(cfg: RunConfig, stages: list[Stage]) -> None:
    """Every input of every stage that is not written inside the run directory must exist now: a
    missing file is a ConfigError naming its key path (e.g. ``data.train``), before anything runs."""
    run_dir = Path(cfg.run_dir).resolve()
    dump = cfg.model_dump(mode="json")
    for stage in stages:
        for item in stage.inputs:
            path = Path(item)
            if path.resolve().is_relative_to(run_dir) or path.exists():
                continue
            keys = _key_paths(dump, str(item)) or [f"stage {stage.name} input"]
            commands = _comment_commands(cfg._source, str(item))
            hint = (f"{cfg._source} says to create it first: " + " or ".join(f"`{c}`" for c in commands)
                    if commands else "create it first, or point the key at an existing file")
            raise ConfigError(f"{', '.join(keys)}: {item} does not exist (input of stage '{stage.name}')",
                              hint=hint)


# -- the chain --------------------------------------------------------------------------------------------
def build_stages(cfg: RunConfig) -> list[Stage]:
    if isinstance(cfg.data, DocsSection):
        return docs_run.build_docs_stages(cfg)
    run = Path(cfg.run_dir)
    llm = cfg.llm
    prepared = run / "prepare_data"
    stages = [Stage("prepare_data", PrepareDataJob(**cfg.data.to_dict(), seed=cfg.seed, output=str(prepared)),
                    inputs=[p for p in (cfg.data.train, cfg.data.eval) if p],
                    outputs=["train.json"] + (["eval.json"] if cfg.data.eval else []))]
    train_file = str(prepared / "train.json")
    tuned = run / "finetune_llm" / "model"
    # resume "auto": a re-run after a kill continues from the last checkpoint when the data and every
    # training setting are unchanged, and starts over (saying which setting changed) otherwise
    ft = FinetuneJob(config=llm.finetune_config(train_file, str(tuned), resume="auto"), launcher=cfg.launcher)
    stages.append(Stage("finetune_llm", ft, inputs=[train_file], outputs=["model/ragtune_finetune.json"]))
    if not cfg.data.eval:
        return stages
    evalset = str(prepared / "eval.json")
    infer = llm.infer.to_dict()
    if infer.get("template") is None and (cfg.data.template or cfg.data.template_lang):
        # the eval items are asked with the template the training records were written with
        from ..data.squad import resolve_template

        infer["template"] = resolve_template(cfg.data.template, cfg.data.template_lang)
    local = {"engine": llm.deploy, "settings": llm.deploy_params, "prompt": llm.prompt, **infer}
    targets: list[tuple[str, dict[str, Any], list[str | Path]]] = []
    if llm.evaluate_base:
        targets.append(("base", {**local, "model": llm.base}, [evalset]))
    targets.append(("tuned", {**local, "model": str(tuned)}, [evalset, tuned]))
    for b in cfg.baselines:
        remote = {"url": b.url, "remote_model": b.model, "prompt": llm.prompt, **infer}
        targets.append((b.name, remote, [evalset]))
    eval_dirs: list[str | Path] = []
    for name, target, inputs in targets:
        sdir = run / f"infer_{name}"
        stages.append(Stage(f"infer_{name}", InferConfig(evalset=evalset, output=str(sdir / "predictions.json"),
                                                         **target),
                            inputs=inputs, outputs=["predictions.json"], secrets=_secrets(cfg, name)))
        result = run / f"eval_{name}" / "result"
        job = LlmEvalConfig(evalset=evalset, predictions=str(sdir / "predictions.json"), run_dir=str(result),
                            name=name, **cfg.eval.to_dict())
        stages.append(Stage(f"eval_{name}", job, inputs=[evalset, sdir / "predictions.json"],
                            outputs=["result/summary.json"]))
        eval_dirs.append(str(result))
    stages.append(Stage("report", CompareConfig(runs=eval_dirs, output=str(run / "report"), stem="report"),
                        inputs=eval_dirs, outputs=["report.md", "report.html"]))
    return stages


def _secrets(cfg: RunConfig, name: str) -> dict[str, str]:
    """A baseline's API key comes from its environment variable when the stage runs: it is in
    neither the job spec, its fingerprint, nor any file."""
    for b in cfg.baselines:
        if b.name == name and b.api_key_env:
            return {"api_key": b.api_key_env}
    return {}


def run_config(cfg: RunConfig, force: list[str] | tuple[str, ...] = ()) -> StageRunner:
    stages = build_stages(cfg)
    names = [s.name for s in stages]
    unknown = [f for f in force if f not in names]
    if unknown:
        raise ConfigError(f"--force: unknown stage(s) {unknown}; stages of this config: {', '.join(names)}")
    cfg.preflight(stages)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.yaml")
    runner = StageRunner(run_dir, force=force)
    for stage in stages:
        runner.run(stage)
        if runner.stopped:
            break
    return runner
