"""Span-extraction data (SQuAD / CMRC2018 schema) -> Alpaca training data and eval sets.

Input rows: ``{"id", "context", "question", "answers": {"text": [..], "answer_start": [..]}}`` (the
Hugging Face ``squad``/``cmrc2018`` schema), as JSON/JSONL/CSV/Parquet. The nested original SQuAD
file layout (``{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}``) is flattened first.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError, DataError
from ..core.io import atomic_write_json, atomic_write_jsonl
from .readers import Record, read_rows
from .summary import Summary

# The CMRC2018 experiment's template (English), and the same instruction in Chinese.
DEFAULT_TEMPLATE = ("Please use the original text of the following paragraph to answer the question"
                    "\n\n### Known paragraph: {context}\n\n### Question: {question}\n")
TEMPLATES = {
    "en": DEFAULT_TEMPLATE,
    "zh": "请用下面段落的原文回答问题\n\n### 已知段落：{context}\n\n### 问题：{question}\n",
}
_PLACEHOLDER = re.compile(r"\{(context|question)\}")


@dataclass
class SquadRow:
    id: str
    context: str
    question: str
    answers: list[str]
    starts: list[int]
    record: Record


def resolve_template(template: str | None = None, template_lang: str | None = None) -> str:
    """``template`` wins; else the ``template_lang`` variant (en|zh); must hold both placeholders."""
    if template is None:
        lang = template_lang or "en"
        if lang not in TEMPLATES:
            raise ConfigError(f"unknown template language {lang!r}; valid: {', '.join(TEMPLATES)}")
        template = TEMPLATES[lang]
    missing = [p for p in ("{context}", "{question}") if p not in template]
    if missing:
        raise ConfigError(f"the template must contain {{context}} and {{question}}; missing {', '.join(missing)}",
                          hint=f"e.g. {DEFAULT_TEMPLATE!r}")
    # A placeholder-looking {name} other than those two is a typo ({contxt}) that would reach every
    # training prompt verbatim; JSON-like braces ({"a": 1}) do not look like one and are kept.
    unknown = sorted(set(re.findall(r"\{([A-Za-z_]\w*)\}", template)) - {"context", "question"})
    if unknown:
        raise ConfigError(f"the template has unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
                          "only {context} and {question} are filled")
    return template


TEMPLATE_SIDECAR = ".ragtune_template.json"   # OUT + this: the instruction template OUT was written with


def template_sidecar(data: str | os.PathLike) -> Path:
    return Path(str(data) + TEMPLATE_SIDECAR)


def read_template_sidecar(data: str | os.PathLike) -> tuple[str | None, str | None]:
    """(instruction template, language or None for a custom one) that ``squad_to_alpaca`` wrote
    ``data`` with; (None, None) for data it did not write."""
    import json

    path = template_sidecar(data)
    if not path.is_file():
        return None, None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return str(info["template"]), info.get("template_lang")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a valid template record: {exc}",
                          hint="delete it, or rerun `ragtune data convert`") from None


def fill_template(template: str, context: str, question: str) -> str:
    # One pass with re.sub, so a context that itself contains "{question}" (or any braces) is
    # inserted verbatim instead of being formatted a second time (str.format would choke on it).
    values = {"context": context, "question": question}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def _flatten_nested(records: list[Record]) -> list[Record]:
    """Original SQuAD layout: articles with paragraphs with qas -> one flat row per question."""
    if not records or "paragraphs" not in records[0].data:
        return records
    rows, i = [], 0
    for art in records:
        for para in art.data.get("paragraphs") or []:
            for qa in para.get("qas") or []:
                answers = qa.get("answers") or []
                rows.append(Record({"id": qa.get("id", str(i)), "context": para.get("context"),
                                    "question": qa.get("question"),
                                    "answers": {"text": [a.get("text") for a in answers],
                                                "answer_start": [a.get("answer_start") for a in answers]}}, i))
                i += 1
    return rows


def read_squad(path: str | os.PathLike, summary: Summary) -> list[SquadRow]:
    """Rows with at least one answer; rows without any answer are rejected (counted, with where)."""
    file = str(path)
    records = _flatten_nested(read_rows(path))
    summary.records_in = len(records)
    rows = []
    for r in records:
        d = r.data
        for key in ("context", "question", "answers"):
            if key not in d or d[key] is None:
                raise DataError(f"missing required field for the squad schema (id, context, question, "
                                f"answers{{text, answer_start}}); {r.where} has {sorted(d)}",
                                file=file, record=r.index, field=key)
        for key in ("context", "question"):
            if not isinstance(d[key], str):
                raise DataError(f"must be a string, got {type(d[key]).__name__}", file=file, record=r.index, field=key)
        answers = d["answers"]
        if not isinstance(answers, dict) or not isinstance(answers.get("text"), list):
            raise DataError("must be an object {text: [..], answer_start: [..]}", file=file,
                            record=r.index, field="answers")
        texts = answers["text"]
        starts = answers.get("answer_start") or [None] * len(texts)
        if any(not isinstance(t, str) for t in texts):
            raise DataError("every answer text must be a string", file=file, record=r.index, field="answers.text")
        label = f"record {r.index}" + (f" (id {d['id']})" if d.get("id") is not None else "")
        if not any(t.strip() for t in texts):
            summary.reject("no answer", label)
            continue
        if not d["question"].strip() or not d["context"].strip():
            summary.reject("empty question or context", label)
            continue
        rows.append(SquadRow(str(d.get("id", r.index)), d["context"], d["question"], list(texts),
                             list(starts), r))
    return rows


def count_offset_mismatches(rows: list[SquadRow], summary: Summary) -> int:
    """Answers whose ``answer_start`` does not point at their text in the context. They are kept
    (the answer text is what matters for training and scoring) but counted and reported."""
    bad = 0
    for row in rows:
        for text, start in zip(row.answers, row.starts):
            if not isinstance(start, int) or row.context[start:start + len(text)] != text:
                bad += 1
                summary.note_example("answer_start mismatches", f"id {row.id} ({text[:20]!r} @ {start})")
    summary.notes["answer_start mismatches"] = bad
    return bad


def squad_to_alpaca(path: str | os.PathLike, out: str | os.PathLike, *, template: str | None = None,
                    template_lang: str | None = None, to: str = "alpaca") -> Summary:
    """SQuAD/CMRC rows -> Alpaca: instruction = template(context, question), input = "",
    output = first answer. Writes JSON (array) or, for a ``.jsonl`` OUT, JSONL."""
    lang = None if template is not None else (template_lang or "en")
    template = resolve_template(template, template_lang)
    summary = Summary("convert squad->alpaca", str(path), str(out))
    rows = read_squad(path, summary)
    count_offset_mismatches(rows, summary)
    items = [{"instruction": fill_template(template, r.context, r.question), "input": "",
              "output": next(a for a in r.answers if a.strip())} for r in rows]
    if to == "messages":
        from .formats import alpaca_to_messages

        items = [alpaca_to_messages(i) for i in items]
        summary.command = "convert squad->messages"
    write_records(out, items)
    # beside OUT: the fine-tune records it with the model, so inference asks in the same template
    atomic_write_json(template_sidecar(out), {"template": template, "template_lang": lang})
    summary.records_out = len(items)
    return summary


def evalset(path: str | os.PathLike, out: str | os.PathLike, *, source: str = "squad") -> Summary:
    """SQuAD/CMRC rows -> eval items ``{id, context, question, answers, all_answers}`` where
    ``answers`` is the first answer text and ``all_answers`` every distinct one (lenient scoring)."""
    if source != "squad":
        raise ConfigError(f"unsupported eval set source {source!r}; available: squad")
    from ..core.io import check_output

    check_output(out, what="OUT")
    summary = Summary("evalset squad", str(path), str(out))
    rows = read_squad(path, summary)
    count_offset_mismatches(rows, summary)
    items = []
    for r in rows:
        distinct = list(dict.fromkeys(a for a in r.answers if a.strip()))
        items.append({"id": r.id, "context": r.context, "question": r.question,
                      "answers": distinct[0], "all_answers": distinct})
    write_records(out, items)
    summary.records_out = len(items)
    return summary


def write_records(out: str | os.PathLike, items: list[dict]) -> None:
    if Path(out).suffix.lower() in (".jsonl", ".ndjson"):
        atomic_write_jsonl(out, items)
    else:
        atomic_write_json(out, items, indent=1)
