"""``ragtune eval rag``: the same questions through the whole RAG pipeline, every embedder x every
LLM (base/tuned x base/tuned: the 2x2), in one report.

Per embedder, the knowledge base (one chunk per line, as ``data synth`` writes it) is indexed and
every question retrieves its chunks: recall@k / MRR@k / NDCG@k, a chunk being relevant when it is
the item's ``context`` (its source chunk). Per cell, the LLM answers from the top ``topk`` chunks
with the CMRC template in the item's language (the template ``data synth`` trained on), and the
answers are scored with the registered metrics (default: exact, the official CMRC2018 and SQuAD
EM/F1, cosine, origin; faithfulness too when a judge URL is given), origin and faithfulness against
the retrieved context the model saw.

Outputs in ``output``: ``cells/<embed>+<llm>/`` (eval run directories: items.json, summary.json,
predictions; ``ragtune eval compare`` reads them), ``report.md`` and ``report.html`` (retrieval
table, answer table, bar chart, the items where the cells disagree) and ``summary.json``.
Predictions are resumable: a finished cell is skipped when its inputs are unchanged, an
interrupted one continues from its partial file. A prompt two embedders share (the same top-k
chunks) is answered once per LLM.
"""
from __future__ import annotations

import hashlib
import html
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..core.errors import ConfigError, DataError
from ..core.io import atomic_dir, atomic_write_json, atomic_write_text, new_run_id
from ..core.log import get_logger
from ..engine.client import is_http_url
from .base import EvalItem, aggregate
from .runner import MetricOptions, build_metrics, score_items
from .runs import EvalRun

log = get_logger(__name__)
RAG_METRICS = ["exact", "cmrc_em", "cmrc_f1", "squad_em", "squad_f1", "cosine", "origin"]
SHOWN_RETRIEVAL = ("recall@1", "recall@3", "recall@5", "mrr@10", "ndcg@10")


class RagEvalConfig(MetricOptions):
    """``ragtune eval rag``: one config for Python, CLI flags and YAML (and the last stage of a docs run)."""
    evalset: str = Field(description="Eval items {question, answers, context[, lang]} (data synth's eval.json).")
    kb: str = Field(description="Knowledge base: a file or directory; one chunk per line (data synth's kb/).")
    embeds: dict[str, str] = Field(description="Embedders by label, e.g. {base: all-MiniLM-L6-v2, tuned: out/embed}.")
    llms: dict[str, str] = Field(description="LLMs by label: model names/dirs or OpenAI-compatible URLs (http://...).")
    output: str = Field(description="Directory for the cells and the report.")
    metrics: list[Any] = Field(default_factory=lambda: list(RAG_METRICS),
                               description="Answer metrics (faithfulness is added when a judge URL is given).")
    topk: int = Field(3, ge=1, description="Retrieved chunks given to the LLM.")
    ks: list[int] = Field([1, 3, 5, 10], description="k values of recall@k / MRR@k / NDCG@k.")
    splitter: Literal["line", "sentence", "none"] = Field("line", description="How the KB becomes chunks.")
    template_lang: Literal["auto", "en", "zh"] = Field("auto", description="CMRC template language: per item 'lang' (auto) or fixed.")
    max_tokens: int = Field(64, ge=1, description="New tokens per answer.")
    llm_batch_size: int = Field(16, ge=1, description="Local LLM: prompts per batched generate.")
    llm_dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description="Local LLM precision: auto (bf16 where native), bf16, fp16, fp32 (greedy answers independent of batching, docs/serve.md).")
    concurrency: int = Field(8, ge=1, description="Requests in flight against an LLM URL.")
    spread: float = Field(0.3, ge=0, le=1, description="A continuous score differing by more than this is a disagreement.")
    judge_api_key: str | None = Field(None, description="Judge API key (or $RAGTUNE_JUDGE_API_KEY).")

    @field_validator("embeds", "llms")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("give at least one entry label: model")
        for label in value:
            if not label or "+" in label or "/" in label:
                raise ValueError(f"label {label!r} must be non-empty without '+' or '/' (it names a directory)")
        return value

    @model_validator(mode="after")
    def _judge_adds_faithfulness(self) -> RagEvalConfig:
        names = [m if isinstance(m, str) else m.get("name") for m in self.metrics]
        if self.judge_base_url and "faithfulness" not in names:
            self.metrics = [*self.metrics, "faithfulness"]
        return self

    def execute(self) -> dict[str, Any]:
        return evaluate_rag(self)


def load_items(path: str) -> list[dict[str, Any]]:
    from ..data.readers import read_items

    items = read_items(path, what="eval set")
    for i, it in enumerate(items):
        for key in ("question", "context"):
            if not isinstance(it.get(key), str) or not it[key].strip():
                raise DataError("must be a non-empty string", file=path, record=i, field=key)
        ans = it.get("answers")
        if isinstance(ans, dict):
            ans = ans.get("text")
        if isinstance(ans, str):
            ans = [ans]
        if not isinstance(ans, list) or not ans or not all(isinstance(a, str) for a in ans):
            raise DataError("must be a string or a non-empty list of strings", file=path, record=i, field="answers")
        it["_answers"] = list(dict.fromkeys([*ans, *(it.get("all_answers") or [])]))
    return items


# -- retrieval ----------------------------------------------------------------------------------------
def retrieve(cfg: RagEvalConfig, embed: str, items: list[dict]) -> tuple[list[list[str]], dict[str, float]]:
    from ..rag.document import ROOT, Document
    from ..rag.retriever import Retriever
    from .retrieval import rank_metrics

    doc = Document(cfg.kb, embed=embed)
    group = ROOT
    if cfg.splitter != "none":
        doc.create_node_group("rag_eval", transform=cfg.splitter)
        group = "rag_eval"
    depth = max(cfg.topk, *cfg.ks)
    ranked = [[n.text.strip() for n in nodes] for nodes in
              Retriever(doc, group, similarity="cosine", topk=depth).retrieve_many([it["question"] for it in items])]
    metrics = rank_metrics(ranked, [{it["context"].strip()} for it in items], cfg.ks)
    metrics["n_queries"], metrics["n_chunks"] = len(items), len(doc.nodes(group))
    return ranked, metrics


def _template(cfg: RagEvalConfig, item: dict) -> str:
    from ..data.squad import TEMPLATES

    lang: str = cfg.template_lang
    if lang == "auto":
        if item.get("lang") in TEMPLATES:
            lang = item["lang"]
        else:
            from .text import has_cjk

            lang = "zh" if has_cjk(item["question"]) else "en"
    return TEMPLATES[lang]


# -- one LLM over the cells of every embedder -----------------------------------------------------------------
def _infer_config(cfg: RagEvalConfig, llm: str, evalset: Path, output: Path):
    from ..infer.runner import InferConfig

    common = {"evalset": str(evalset), "output": str(output), "max_tokens": cfg.max_tokens,
              "batch_size": cfg.llm_batch_size, "concurrency": cfg.concurrency}
    if is_http_url(llm):
        return InferConfig(url=llm, **common)
    # dtype is an engine setting: the config routes the flat key into its typed settings
    return InferConfig.model_validate({"model": llm, "dtype": cfg.llm_dtype, **common})


def _cell_inputs(cfg: RagEvalConfig, items: list[dict], ranked: list[list[str]]) -> list[dict]:
    from ..data.squad import fill_template

    rows = []
    for it, chunks in zip(items, ranked):
        context = "\n".join(chunks[: cfg.topk])
        rows.append({"instruction": fill_template(_template(cfg, it), context, it["question"]), "input": "",
                     "retrieved": chunks[: cfg.topk]})
    return rows


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def predict(cfg: RagEvalConfig, llm_label: str, llm: str, cells: dict[str, list[dict]], out: Path) -> dict[str, list[str]]:
    """Predictions of one LLM for the cell of every embedder; a finished cell with unchanged inputs
    is read back, an interrupted one resumes (the infer partial file).

    A prompt is answered once per LLM: where two embedders retrieve the same top-k chunks for a
    question, the prompts are equal and the later cell reuses the answer. This saves generation
    (often the bulk of an eval), and a difference between two cells of one LLM is then always
    a difference in retrieval, never batch-composition noise of a low-precision engine."""
    preds: dict[str, list[str]] = {}
    answered: dict[str, dict] = {}     # instruction -> {prediction, finish_reason}, over this LLM's cells
    engine = None
    try:
        for embed_label, rows in cells.items():
            cell = out / "cells" / f"{embed_label}+{llm_label}"
            key = _digest({"llm": llm, "rows": rows, "max_tokens": cfg.max_tokens})
            done = cell / "predictions.json"
            marker = cell / "predictions.key"
            if done.exists() and marker.exists() and marker.read_text() == key:
                got = json.loads(done.read_text(encoding="utf-8"))
                answered.update({r["instruction"]: r for r in got})
                preds[embed_label] = [r["prediction"] for r in got]
                log.info("cell %s+%s: predictions up to date", embed_label, llm_label)
                continue
            asked = [r for r in {r["instruction"]: r for r in rows}.values() if r["instruction"] not in answered]
            log.info("cell %s+%s: %d questions, %d prompts not yet answered by this LLM", embed_label, llm_label,
                     len(rows), len(asked))
            if asked:
                atomic_write_json(cell / "asked.json", asked, indent=None)
                icfg = _infer_config(cfg, llm, cell / "asked.json", cell / "asked_predictions.json")
                if icfg.url is None and engine is None:
                    from ..infer.runner import _load_engine

                    engine = _load_engine(icfg)    # one load for all cells of this LLM
                answered.update({r["instruction"]: r for r in icfg.execute(engine=engine)})
            result = [{**r, "prediction": answered[r["instruction"]]["prediction"],
                       "finish_reason": answered[r["instruction"]]["finish_reason"]} for r in rows]
            atomic_write_json(done, result)
            atomic_write_text(marker, key)
            preds[embed_label] = [r["prediction"] for r in result]
    finally:
        if engine is not None:
            engine.close()
    return preds


# -- scoring and report ----------------------------------------------------------------------------------------
def write_cell(cfg: RagEvalConfig, name: str, items: list[dict], rows: list[dict], preds: list[str],
               retrieval: dict[str, float], metrics: list, out: Path) -> EvalRun:
    evals = [EvalItem(question=it["question"], context="\n".join(r["retrieved"]), reference=it["_answers"][0],
                      prediction=p, all_answers=it["_answers"], retrieved=r["retrieved"],
                      reference_contexts=[it["context"]]) for it, r, p in zip(items, rows, preds)]
    results = score_items(evals, metrics)
    run_rows = [{"index": i, "question": e.question, "context": e.context, "reference": e.reference,
                 "all_answers": e.all_answers, "prediction": e.prediction,
                 "retrieved_source_chunk": items[i]["context"].strip() in [c.strip() for c in e.retrieved],
                 "scores": {m.name: results[m.name][i].to_dict() for m in metrics}} for i, e in enumerate(evals)]
    summary = {"run_id": new_run_id(), "name": name, "evalset": cfg.evalset, "predictions": str(out / "predictions.json"),
               "n_items": len(evals), "retrieval": retrieval,
               "metrics": {m.name: {**m.describe(), **aggregate(results[m.name]).to_dict()} for m in metrics}}
    with atomic_dir(out / "result") as tmp:
        atomic_write_json(tmp / "items.json", run_rows)
        atomic_write_json(tmp / "summary.json", summary)
    return EvalRun(out / "result", summary, run_rows)


def retrieval_markdown(retrieval: dict[str, dict[str, float]]) -> str:
    keys = [k for k in SHOWN_RETRIEVAL if k in next(iter(retrieval.values()))]
    lines = ["| Embedder | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for label, m in retrieval.items():
        lines.append(f"| {label} | " + " | ".join(f"{100 * m[k]:.2f}%" for k in keys) + " |")
    n = next(iter(retrieval.values()))
    return "\n".join(lines) + f"\n\n{n['n_queries']} questions, {n['n_chunks']} knowledge-base chunks; " \
                              "a chunk is relevant when it is the question's source chunk.\n"


def retrieval_html(retrieval: dict[str, dict[str, float]]) -> str:
    keys = [k for k in SHOWN_RETRIEVAL if k in next(iter(retrieval.values()))]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    rows = "".join(f"<tr><td>{html.escape(label)}</td>" + "".join(
        f"<td class='num'>{100 * m[k]:.2f}%</td>" for k in keys) + "</tr>" for label, m in retrieval.items())
    return f"<h2>Retrieval</h2><table><tr><th>Embedder</th>{head}</tr>{rows}</table><h2>Answers</h2>"


def evaluate_rag(cfg: RagEvalConfig | None = None, /, **kw: Any) -> dict[str, Any]:
    from .report import compare_markdown, render_html

    cfg = cfg if cfg is not None else RagEvalConfig.build(**kw)
    items = load_items(cfg.evalset)
    metrics = build_metrics(cfg, cfg.judge_api_key)    # unknown metrics / parameters fail before any model loads
    out = Path(cfg.output)
    retrieval, cells = {}, {}
    for label, embed in cfg.embeds.items():
        ranked, retrieval[label] = retrieve(cfg, embed, items)
        cells[label] = _cell_inputs(cfg, items, ranked)
        log.info("embedder %s: recall@1 %.4f, ndcg@10 %.4f", label, retrieval[label].get("recall@1", 0),
                 retrieval[label].get("ndcg@10", 0))
    runs: list[EvalRun] = []
    for llm_label, llm in cfg.llms.items():
        preds = predict(cfg, llm_label, llm, cells, out)
        for embed_label in cfg.embeds:
            name = f"{embed_label} embed + {llm_label} LLM"
            runs.append(write_cell(cfg, name, items, cells[embed_label], preds[embed_label], retrieval[embed_label],
                                   metrics, out / "cells" / f"{embed_label}+{llm_label}"))
    report = (f"# RAG eval: {len(cfg.embeds)} embedder(s) x {len(cfg.llms)} LLM(s)\n\n## Retrieval\n\n"
              + retrieval_markdown(retrieval) + "\n## Answers\n\n"
              + compare_markdown(runs, spread=cfg.spread).replace("# Comparison\n", "", 1))
    atomic_write_text(out / "report.md", report)
    page = render_html(runs, title="ragtune eval rag", spread=cfg.spread)
    marker = "</h1>"
    page = page.replace(marker, marker + retrieval_html(retrieval), 1)
    atomic_write_text(out / "report.html", page)
    summary = {"evalset": cfg.evalset, "kb": cfg.kb, "n_items": len(items), "topk": cfg.topk,
               "embeds": cfg.embeds, "llms": cfg.llms,
               "cells": {r.summary["name"]: {"retrieval": r.summary["retrieval"],
                                             "answers": {m: v["mean"] for m, v in r.summary["metrics"].items()},
                                             "dir": str(r.path)} for r in runs}}
    atomic_write_json(out / "summary.json", summary)
    cfg.save(out / "config.yaml")
    return summary


def parse_labelled(values: tuple[str, ...] | list[str], what: str) -> dict[str, str]:
    """CLI ``--embedder base=all-MiniLM-L6-v2 --embedder tuned=out/embed`` -> {base: ..., tuned: ...}."""
    out: dict[str, str] = {}
    for v in values:
        label, sep, ref = v.partition("=")
        if not sep or not label or not ref:
            raise ConfigError(f"--{what} {v!r}: expected LABEL=MODEL, e.g. --{what} tuned=out/model")
        if label in out:
            raise ConfigError(f"--{what}: label {label!r} given twice")
        out[label] = ref
    return out
