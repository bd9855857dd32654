"""``ragtune demo``: the whole story in a few minutes on a CPU, offline, with the bundled models.

1. Generate fictional maintenance manuals with span-extraction questions (:mod:`ragtune.data.manuals`):
   new to every pre-trained model, so the base model cannot know the answers.
2. ``ragtune run`` on them: SQuAD -> alpaca, LoRA fine-tune of gemma-3-270m, inference and scoring of
   base and tuned models (exact, cosine, origin), comparison report (markdown + HTML).
3. A small RAG over the manuals with the tuned model: retrieve the passage for a question with the
   bundled all-MiniLM-L6-v2, answer from it.
Re-running skips what is already done (same stages as ``ragtune run``).
"""
from __future__ import annotations

import json
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


@dataclass
class DemoResult:
    run_dir: Path
    report_md: Path
    report_html: Path
    summaries: dict[str, dict[str, Any]]
    rag_answers: list[dict[str, str]]


def make_demo_data(out: Path, n_machines: int, seed: int) -> dict[str, Path]:
    from ..data.manuals import generate_manuals, split_by_passage

    records = generate_manuals(n_machines, questions_per_machine=4, seed=seed)
    train, test = split_by_passage(records, eval_fraction=0.2, seed=seed)
    data = out / "data"
    paths = {"train": atomic_write_json(data / "train_squad.json", train),
             "eval": atomic_write_json(data / "test_squad.json", test)}
    # The knowledge base: every manual, one per line (Document splits it by line).
    passages = sorted({r["context"] for r in records})
    paths["kb"] = atomic_write_text(out / "kb" / "manuals.txt", "\n".join(passages) + "\n")
    return paths


def demo_config(out: Path, paths: dict[str, Path], llm: str, embed: str, seed: int, finetune: dict | None = None):
    from .run import RunConfig

    return RunConfig.build(
        run_dir=str(out / "run"), seed=seed,
        data={"train": str(paths["train"]), "eval": str(paths["eval"])},
        llm={"base": llm, "method": "lora", "finetune": {**DEMO_FINETUNE, **(finetune or {})},
             "infer": {"max_tokens": 24, "batch_size": 16}},
        eval={"metrics": ["exact", "cosine", "origin"], "embed": embed, "exact_mode": "strict"})


def rag_answers(paths: dict[str, Path], tuned_dir: Path, embed: str, questions: list[dict]) -> list[dict[str, str]]:
    """Retrieve the manual for each question (cosine, top-1) and answer with the tuned model, using
    the same instruction template it was trained on."""
    from ..data import DEFAULT_TEMPLATE, fill_template
    from ..engine.client import LocalLLM
    from ..rag import Document, Retriever

    docs = Document(str(paths["kb"].parent), embed=embed)
    docs.create_node_group("manuals", transform=lambda text: [s for s in text.split("\n") if s.strip()])
    retriever = Retriever(docs, "manuals", similarity="cosine", topk=1, output_format="content", join="")
    llm = LocalLLM.load(str(tuned_dir), max_tokens=24)
    rows = []
    for q in questions:
        context = retriever(q["question"])
        answer = llm(fill_template(DEFAULT_TEMPLATE, context, q["question"]))
        rows.append({"question": q["question"], "retrieved_right_manual": context.strip() == q["context"].strip(),
                     "answer": answer.strip(), "reference": q["answers"]["text"][0]})
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
             llm: str = "gemma-3-270m", embed: str = "all-MiniLM-L6-v2", finetune: dict | None = None,
             rag_questions: int = 2) -> DemoResult:
    from .run import run_config

    out = Path(output)
    paths = make_demo_data(out, n_machines, seed)
    cfg = demo_config(out, paths, llm, embed, seed, finetune)
    runner = run_config(cfg)
    run = runner.run_dir
    summaries = {name: json.loads((run / f"eval_{name}" / "result" / "summary.json").read_text(encoding="utf-8"))
                 for name in ("base", "tuned")}
    test = json.loads(Path(paths["eval"]).read_text(encoding="utf-8"))
    picks = distinct_questions(test, rag_questions)
    answers = rag_answers(paths, run / "finetune_llm" / "model", embed, picks)
    atomic_write_json(out / "rag_answers.json", answers)
    return DemoResult(run, run / "report" / "report.md", run / "report" / "report.html", summaries, answers)
