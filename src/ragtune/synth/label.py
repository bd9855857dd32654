"""``ragtune data label IN --teacher URL|MODEL --output OUT``: sequence-level distillation data.

Existing unlabelled questions (logged user questions with the context that was retrieved for
them, for example) are answered by the teacher with a verbatim span of their context, validated
by the same filters as ``data synth`` (empty, not a span of the context, too long, contained in
the question), and written as Alpaca SFT rows with the CMRC template. With ``logprobs=K`` each row
also carries the teacher's top-K log-probabilities per answer token (``teacher.token_ids`` and
``teacher.top_logprobs``), which the ``kd`` fine-tune method distils from; that needs a teacher that
returns token ids (a ``ragtune serve`` or vLLM server, or a local model) with the student's tokenizer.

Input rows: ``{question, context}``; ``context`` may be a list of passages (joined by newlines), and
the field names are configurable. Answers are journaled (``OUT.journal.jsonl``): resumable.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..core.errors import BackendError, DataError
from ..core.io import atomic_write_json
from ..core.log import get_logger
from ..data.squad import TEMPLATES, fill_template
from ..data.summary import Summary
from . import filters as F
from .journal import Journal
from .pipeline import PROMPTS_DIR
from .teacher import Teacher, TeacherOptions, read_prompt_file

log = get_logger(__name__)


class LabelConfig(TeacherOptions):
    """``ragtune data label``: one config for Python, CLI flags and YAML."""
    input: str = Field(description="Rows to label: JSON/JSONL/CSV/Parquet with a question and its context.")
    output: str = Field(description="Alpaca SFT file to write (.json list, or .jsonl).")
    question_field: str = Field("question", description="Field holding the question.")
    context_field: str = Field("context", description="Field holding the context (a string or a list of passages).")
    lang: Literal["auto", "en", "zh"] = Field("auto", description="Prompt and template language (auto: zh when CJK).")
    prompt_file: str | None = Field(None, description="Own prompt template with {context} and {question}.")
    logprobs: int | None = Field(None, ge=0, le=20, description="Also store the teacher's top-K logprobs per answer token (for the kd method).")
    max_answer_chars: int = Field(120, ge=0, description="Longer answers are rejected (0 = no limit).")
    max_tokens: int = Field(64, ge=1, description="New tokens per teacher answer.")
    restart: bool = Field(False, description="Forget earlier answers in the journal and ask again.")

    def execute(self) -> Summary:
        return label(self)


def _rows(cfg: LabelConfig) -> list[tuple[int, str, str]]:
    from ..data.readers import read_rows

    out = []
    for r in read_rows(cfg.input):
        q, ctx = r.data.get(cfg.question_field), r.data.get(cfg.context_field)
        if not isinstance(q, str) or not q.strip():
            raise DataError("must be a non-empty string", file=cfg.input, record=r.index, field=cfg.question_field)
        if isinstance(ctx, list) and ctx and all(isinstance(c, str) for c in ctx):
            ctx = "\n".join(ctx)
        if not isinstance(ctx, str) or not ctx.strip():
            raise DataError("must be a non-empty string or a list of strings", file=cfg.input, record=r.index,
                            field=cfg.context_field)
        out.append((r.index, q.strip(), ctx.strip()))
    return out


def _templates(cfg: LabelConfig) -> dict[str, str]:
    if cfg.prompt_file:
        text = read_prompt_file(cfg.prompt_file, ("context", "question"))
        return {"en": text, "zh": text}
    return {lang: read_prompt_file(str(PROMPTS_DIR / f"label_{lang}.txt"), ("context", "question"))
            for lang in ("en", "zh")}


def _key(question: str, context: str) -> str:
    return hashlib.sha256(f"{question}\x1f{context}".encode()).hexdigest()[:24]


def label(cfg: LabelConfig | None = None, **kwargs: Any) -> Summary:
    from tqdm.auto import tqdm

    cfg = cfg or LabelConfig.build(**kwargs)
    rows = _rows(cfg)
    summary = Summary("label", cfg.input, cfg.output, records_in=len(rows))
    templates = _templates(cfg)
    teacher = Teacher(cfg)
    name = teacher.check()
    summary.notes["teacher"] = name
    meta = {"teacher": teacher.identity, "prompt_sha256": hashlib.sha256(json.dumps(templates).encode()).hexdigest()[:16],
            "logprobs": cfg.logprobs, "max_tokens": cfg.max_tokens, "temperature": cfg.temperature}
    langs = {i: cfg.lang if cfg.lang != "auto" else ("zh" if F.is_cjk_text(c) else "en") for i, _, c in rows}
    journal = Journal(str(cfg.output) + ".journal.jsonl", meta, cfg.restart)
    try:
        todo = [r for r in rows if not journal.done(_key(r[1], r[2]))]
        step = cfg.concurrency * (2 if cfg.is_url else 1)
        with tqdm(total=len(rows), initial=len(rows) - len(todo), desc="label", unit="row") as bar:
            for start in range(0, len(todo), step):
                part = todo[start:start + step]
                msgs = [[{"role": "user", "content": templates[langs[i]].format(context=c, question=q)}]
                        for i, q, c in part]
                for (_, q, c), reply in zip(part, teacher.chat_many(msgs, top_logprobs=cfg.logprobs)):
                    if isinstance(reply, BackendError):
                        journal.add(_key(q, c), status="teacher_error", error=str(reply))
                    else:
                        journal.add(_key(q, c), status="ok", text=reply.text, content=reply.content,
                                    token_ids=reply.token_ids, top_logprobs=reply.top_logprobs)
                bar.update(len(part))
        records = _records(cfg, rows, langs, journal, name, summary)
    finally:
        journal.close()
        teacher.close()
    if Path(cfg.output).suffix.lower() == ".jsonl":
        from ..core.io import atomic_write_jsonl

        atomic_write_jsonl(cfg.output, records)
    else:
        atomic_write_json(cfg.output, records, indent=1)
    summary.records_out = len(records)
    return summary


def _records(cfg, rows, langs, journal, name, summary) -> list[dict]:
    records, errors, trimmed = [], 0, 0
    for i, q, c in rows:
        entry = journal.entries.get(_key(q, c))
        where = f"record {i}"
        if entry is None or entry["status"] != "ok":
            errors += 1
            summary.note_example("rows without an answer (teacher errors; re-run to ask again)", where)
            continue
        answer = F.clean_answer(entry["content"])
        reason = F.check_item(q, answer, c, cfg.max_answer_chars)
        if reason:
            summary.reject(reason, where)
            continue
        rec: dict[str, Any] = {"instruction": fill_template(TEMPLATES[langs[i]], c, q), "input": "", "output": answer}
        if cfg.logprobs is not None:
            # the distribution belongs to the tokens the teacher generated: only when the answer IS that text
            if entry["text"] == answer and entry.get("token_ids"):
                rec["teacher"] = {"model": name, "token_ids": entry["token_ids"], "top_logprobs": entry["top_logprobs"]}
            else:
                trimmed += 1
                summary.note_example("rows without teacher logprobs (answer differs from the raw generation)", where)
        records.append(rec)
    summary.notes["rows without an answer (teacher errors; re-run to ask again)"] = errors
    if cfg.logprobs is not None:
        summary.notes["rows without teacher logprobs (answer differs from the raw generation)"] = trimmed
    return records
