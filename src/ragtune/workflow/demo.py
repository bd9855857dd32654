"""``ragtune demo``: from a folder of documents to two tuned models, offline, in minutes on a CPU.

1. Fictional maintenance manuals are written as documents, one per machine (:mod:`ragtune.data.manuals`):
   new to every pre-trained model, so the base models cannot know the answers.
2. ``ragtune run`` with the documents source: ``data synth`` asks a teacher for questions with
   verbatim answers, LoRA fine-tunes gemma-3-270m on them, fine-tunes all-MiniLM-L6-v2 on the
   query/passage pairs, and evaluates base/tuned embedder x base/tuned LLM on the questions of
   held-out manuals (``eval rag``), in one markdown + HTML report.
3. A small RAG over the manuals answers two questions with the tuned pair.

The teacher: ``teacher=URL|MODEL`` uses that one. By default the demo serves its *manuals teacher*:
an OpenAI-compatible server on 127.0.0.1 whose answers come from the generator's own facts and
question templates. It is not a language model (a CPU has no strong teacher to spare for a demo);
it shows the chain, and the demo prints which teacher it used.
Re-running skips what is already done (the same stages as ``ragtune run``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.io import atomic_write_json, atomic_write_text
from ..core.log import get_logger

log = get_logger(__name__)

# The demo recipe: chosen by measurement (BENCHMARKS.md, "ragtune demo"): enough steps for a 270M
# model to learn where an answer span stops, small enough to train in ~3 minutes on 2 cores.
DEMO_FINETUNE = {
    "learning_rate": 1e-3, "num_train_epochs": 1, "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1, "lora_rank": 16, "lora_alpha": 32, "cutoff_len": 512,
    "lr_scheduler_type": "cosine", "warmup_ratio": 0.05, "seed": 0, "logging_steps": 5,
}
DEMO_EMBED_FINETUNE = {"num_train_epochs": 1, "per_device_train_batch_size": 16, "learning_rate": 5e-5,
                       "train_group_size": 2, "dtype": "fp32", "seed": 0}
MANUALS_TEACHER = "manuals-teacher"


@dataclass
class DemoResult:
    run_dir: Path
    report_md: Path
    report_html: Path
    summary: dict[str, Any]            # eval rag's summary.json: the 2x2 cells
    rag_answers: list[dict[str, str]]
    teacher: str


def make_demo_data(out: Path, n_machines: int, seed: int) -> dict[str, Path]:
    """One document per machine (``docs/<machine>.md``) and the generator's facts (``facts.json``:
    per manual every question and its answer: what the manuals teacher knows)."""
    from ..data.manuals import FACTS, generate_manuals

    records = generate_manuals(n_machines, questions_per_machine=len(FACTS), seed=seed)
    facts: dict[str, list[dict[str, str]]] = {}
    for r in records:
        facts.setdefault(r["context"], []).append({"question": r["question"], "answer": r["answers"]["text"][0]})
    docs = out / "docs"
    for i, context in enumerate(facts):
        name = re.sub(r"[^A-Za-z0-9]+", "-", context.split(" maintenance manual.")[0]).strip("-")
        atomic_write_text(docs / f"{i:03d}-{name}.md", context + "\n")
    return {"docs": docs, "facts": atomic_write_json(out / "facts.json", facts)}


# -- the manuals teacher ----------------------------------------------------------------------------------
def manuals_teacher_app(facts: dict[str, list[dict[str, str]]], per_chunk: int):
    """An OpenAI-compatible chat endpoint that answers ``data synth``'s prompt with the questions the
    generator wrote about the passage in it (those whose answer the passage contains)."""
    from fastapi import FastAPI, Request

    app = FastAPI(title="ragtune manuals teacher")

    def questions(passage: str) -> list[dict[str, str]]:
        for context, qa in facts.items():
            if context.strip() == passage.strip():
                return qa[:per_chunk]
        return [q for qa in facts.values() for q in qa if q["answer"] in passage][:per_chunk]

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": MANUALS_TEACHER, "object": "model", "owned_by": "ragtune"}]}

    async def chat(request):
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        passage = prompt.rsplit("Passage:\n", 1)[-1]
        content = json.dumps({"qa": questions(passage)}, ensure_ascii=False)
        return {"id": "demo", "object": "chat.completion", "model": MANUALS_TEACHER,
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}

    chat.__annotations__["request"] = Request   # a real class: this module's annotations are strings
    app.post("/v1/chat/completions")(chat)
    return app


def start_manuals_teacher(facts_path: Path, per_chunk: int):
    from ..serve.server import ServerThread

    facts = json.loads(Path(facts_path).read_text(encoding="utf-8"))
    return ServerThread(manuals_teacher_app(facts, per_chunk), port=0).start()


# -- the chain --------------------------------------------------------------------------------------------
def demo_config(out: Path, paths: dict[str, Path], llm: str, embed: str, seed: int, teacher: str,
                finetune: dict | None = None, embed_finetune: dict | None = None, questions_per_chunk: int = 4):
    from .run import RunConfig

    return RunConfig.build(
        run_dir=str(out / "run"), seed=seed,
        data={"from": "docs", "path": str(paths["docs"]), "teacher": teacher, "questions_per_chunk": questions_per_chunk,
              "embed": embed, "eval_fraction": 0.2, "seed": seed, "neg_num": 3, "lang": "en"},
        llm={"base": llm, "method": "lora", "finetune": {**DEMO_FINETUNE, **(finetune or {})},
             "infer": {"max_tokens": 24, "batch_size": 16}},
        embed={"base": embed, "finetune": {**DEMO_EMBED_FINETUNE, **(embed_finetune or {})}, "topk": 1},
        eval={"metrics": ["exact", "squad_f1", "cosine", "origin"], "embed": embed})


def rag_answers(kb: Path, tuned_llm: Path, tuned_embed: Path, questions: list[dict]) -> list[dict[str, str]]:
    """Retrieve the manual for each question with the tuned embedder (top-1) and answer with the
    tuned LLM, using the template it was trained on."""
    from ..data import DEFAULT_TEMPLATE, fill_template
    from ..engine.client import LocalLLM
    from ..rag import Document, Retriever

    docs = Document(str(kb), embed=str(tuned_embed))
    docs.create_node_group("chunks", transform="line")
    retriever = Retriever(docs, "chunks", similarity="cosine", topk=1, output_format="content", join="")
    llm = LocalLLM.load(str(tuned_llm), max_tokens=24)
    rows = []
    try:
        for q in questions:
            context = retriever(q["question"])
            answer = llm(fill_template(DEFAULT_TEMPLATE, context, q["question"]))
            rows.append({"question": q["question"], "retrieved_right_manual": context.strip() == q["context"].strip(),
                         "answer": answer.strip(), "reference": q["answers"]})
    finally:
        llm.engine.close()
    return rows


def distinct_questions(items: list[dict], n: int) -> list[dict]:
    """``n`` questions about different facts (different question openings), in eval-set order."""
    picks, seen = [], set()
    for item in items:
        opening = " ".join(item["question"].split()[:3])
        if opening not in seen:
            seen.add(opening)
            picks.append(item)
        if len(picks) == n:
            break
    return picks


def run_demo(output: str | Path = "ragtune-demo", *, seed: int = 0, n_machines: int = 50,
             llm: str = "gemma-3-270m", embed: str = "all-MiniLM-L6-v2", teacher: str | None = None,
             finetune: dict | None = None, embed_finetune: dict | None = None, questions_per_chunk: int = 4,
             rag_questions: int = 2) -> DemoResult:
    from .run import run_config

    out = Path(output)
    paths = make_demo_data(out, n_machines, seed)
    server = None
    if teacher is None:
        server = start_manuals_teacher(paths["facts"], questions_per_chunk)
        url = server.url + "/v1"
        label = (f"{MANUALS_TEACHER} at {url}: the generator's own questions served over HTTP, not a language "
                 "model (pass --teacher URL|MODEL for a real one)")
    else:
        url, label = teacher, teacher
    log.info("teacher: %s", label)
    try:
        cfg = demo_config(out, paths, llm, embed, seed, url, finetune, embed_finetune, questions_per_chunk)
        runner = run_config(cfg)
    finally:
        if server is not None:
            server.stop()
    run = runner.run_dir
    report = run / "eval_rag" / "report"
    summary = json.loads((report / "summary.json").read_text(encoding="utf-8"))
    evalset = json.loads((run / "synth" / "out" / "eval.json").read_text(encoding="utf-8"))
    picks = distinct_questions(evalset, rag_questions)
    answers = rag_answers(run / "synth" / "out" / "kb", run / "finetune_llm" / "model",
                          run / "finetune_embed" / "model", picks)
    atomic_write_json(out / "rag_answers.json", answers)
    return DemoResult(run, report / "report.md", report / "report.html", summary, answers, label)
