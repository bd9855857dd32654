"""The documents source of ``ragtune run``: from a folder of documents to both tuned models and
the 2x2 report, with no labelled data.

    run_dir: runs/kb
    data: {from: docs, path: KB/, teacher: http://127.0.0.1:8000/v1, questions_per_chunk: 3}
    llm: {base: gemma-3-270m, finetune: {num_train_epochs: 2}}
    embed: {base: all-MiniLM-L6-v2, finetune: {num_train_epochs: 1}}
    eval: {metrics: [exact, cmrc_f1, cosine, origin]}

Stages (each resumable, skipped when its job and inputs are unchanged): ``synth`` (``data synth``:
SFT set, embedding pairs, eval set, KB) -> ``finetune_llm`` (the ``llm`` method on the SFT set) ->
``finetune_embed`` (the ``embed`` method on the pairs) -> ``eval_rag`` (``eval rag``: base/tuned
embedder x base/tuned LLM on the held-out documents' questions). Every section is typed: a wrong key
anywhere fails when the file is read, and the teacher is reached before the first stage runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from ..core.config import Config
from ..core.errors import ConfigError
from ..synth.pipeline import SynthConfig

# keys of the docs section that are not SynthConfig's (the rest are passed to it)
_OWN = ("from_", "path")


class DocsSection(SynthConfig):
    """``data: {from: docs, path: KB/, teacher: ...}`` plus any ``ragtune data synth`` setting."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    from_: Literal["docs"] = Field(alias="from", description="The documents source.")
    path: str = Field(description="Folder (or file) of documents.")
    docs: str = Field("", description="(set from path)")
    output: str = Field("", description="(set by the run: RUN_DIR/synth/out)")

    @model_validator(mode="after")
    def _own_paths(self) -> "DocsSection":
        if self.docs or self.output:
            raise ConfigError("data.docs / data.output are set by the run: use data.path")
        return self

    def synth_job(self, output: Path) -> SynthConfig:
        values = self.model_dump(exclude={*_OWN, "docs", "output"}, exclude_unset=True)
        return SynthConfig.build("data", docs=self.path, output=str(output), **values)


class EmbedSection(Config):
    """The embedder of a docs run: its base, fine-tune method and the method's hyper-parameters."""
    base: str = Field("all-MiniLM-L6-v2", description="Base embedder: bundled name, local dir or HF id.")
    method: Literal["embedding", "flagembedding"] = Field("embedding", description="Embedding fine-tune method.")
    finetune: dict[str, Any] = Field(default_factory=dict, description="Hyper-parameters (validated by the method's config).")
    topk: int = Field(3, ge=1, description="Retrieved chunks given to the LLM in the 2x2 eval.")

    @model_validator(mode="after")
    def _typed(self) -> "EmbedSection":
        for bad in ("base", "train", "output", "method"):
            if bad in self.finetune:
                raise ConfigError(f"embed.finetune.{bad} is set by the run (embed.base, the synth pairs, the stage dir)")
        self.finetune_config("<placeholder>", "<placeholder>")
        return self

    def finetune_config(self, train: str, output: str):
        from ..finetune import finetune_config

        return finetune_config({"method": self.method, "base": self.base, "train": train, "output": output,
                                **self.finetune}, "embed.finetune")


def data_source(value: Any) -> Any:
    """Before-validator of ``RunConfig.data``: a ``from: docs`` mapping becomes a DocsSection (its own
    messages); anything else goes on to the files section unchanged."""
    if isinstance(value, dict) and value.get("from") == "docs":
        return DocsSection.build("data", **value)
    if isinstance(value, dict) and "from" in value:
        raise ConfigError(f"data.from: unknown source {value['from']!r}; valid: docs (or omit it for data files)")
    return value


def source_tag(value: Any) -> str:
    """Discriminator of the data union."""
    if isinstance(value, DocsSection) or (isinstance(value, dict) and value.get("from") == "docs"):
        return "docs"
    return "files"


def preflight(cfg: Any) -> None:
    """Before any stage: the documents exist, the teacher answers (or its local model resolves), the
    embedder resolves."""
    from ..models import resolve_model
    from ..synth.teacher import Teacher

    data = cfg.data
    if not Path(data.path).exists():
        raise ConfigError(f"data.path: {data.path} does not exist")
    if data.is_url:
        Teacher(data).check()
    else:
        try:
            resolve_model(data.teacher, kind="llm")
        except Exception as exc:
            raise ConfigError(f"data.teacher: {exc}") from None
    try:
        resolve_model(embed_section(cfg).base, kind="embedding")
    except Exception as exc:
        raise ConfigError(f"embed.base: {exc}") from None


def embed_section(cfg: Any) -> EmbedSection:
    return cfg.embed if cfg.embed is not None else EmbedSection()


def build_docs_stages(cfg: Any) -> list:
    from ..eval.rag_eval import RAG_METRICS, RagEvalConfig
    from .jobs import FinetuneJob
    from .stages import Stage

    run = Path(cfg.run_dir)
    out = run / "synth" / "out"
    synth = cfg.data.synth_job(out)
    stages = [Stage("synth", synth, inputs=[cfg.data.path],
                    outputs=["out/sft.json", "out/embed_train.jsonl", "out/eval.json", "out/kb/chunks.txt"])]
    tuned_llm = run / "finetune_llm" / "model"
    llm_job = FinetuneJob(config=cfg.llm.finetune_config(str(out / "sft.json"), str(tuned_llm), resume="auto"),
                          launcher=cfg.launcher)
    stages.append(Stage("finetune_llm", llm_job, inputs=[out / "sft.json"], outputs=["model/ragtune_finetune.json"]))
    emb = embed_section(cfg)
    tuned_embed = run / "finetune_embed" / "model"
    stages.append(Stage("finetune_embed", FinetuneJob(config=emb.finetune_config(str(out / "embed_train.jsonl"),
                                                                                  str(tuned_embed))),
                        inputs=[out / "embed_train.jsonl"], outputs=["model"]))
    options = cfg.eval.model_dump(exclude={"exact_mode"})
    if "metrics" not in cfg.eval.model_fields_set:
        options["metrics"] = list(RAG_METRICS)
    job = RagEvalConfig(evalset=str(out / "eval.json"), kb=str(out / "kb"), output=str(run / "eval_rag" / "report"),
                        embeds={"base": emb.base, "tuned": str(tuned_embed)},
                        llms={"base": cfg.llm.base, "tuned": str(tuned_llm)}, topk=emb.topk,
                        max_tokens=cfg.llm.infer.max_tokens, llm_batch_size=cfg.llm.infer.batch_size, **options)
    stages.append(Stage("eval_rag", job, inputs=[out / "eval.json", out / "kb", tuned_llm, tuned_embed],
                        outputs=["report/report.md", "report/report.html", "report/summary.json"]))
    return stages


def check_sections(cfg: Any) -> None:
    """Sections that only one source uses must not be silently ignored by the other."""
    docs = isinstance(cfg.data, DocsSection)
    if not docs and cfg.embed is not None:
        raise ConfigError("embed: only a documents run (data: {from: docs, ...}) fine-tunes the embedder")
    if docs and cfg.baselines:
        raise ConfigError("baselines: a documents run compares base/tuned embedders x LLMs (eval_rag); "
                          "remove baselines or evaluate them with `ragtune eval rag --llm NAME=URL`")
    if docs and not cfg.llm.evaluate_base:
        raise ConfigError("llm.evaluate_base: the 2x2 of a documents run always includes the base LLM")


