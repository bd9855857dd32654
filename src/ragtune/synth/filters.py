"""Parsing teacher output and the quality filters of synthetic QA. Every rejection has a reason
that the summary counts (with a few example ids), nothing is dropped without one."""
from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# reasons, as the summary names them
UNPARSEABLE = "unparseable teacher output"
EMPTY = "empty question or answer"
NOT_IN_CHUNK = "answer is not a verbatim span of the chunk"
TOO_LONG = "answer longer than max_answer_chars"
CONTAINS_ANSWER = "question contains the answer"
DUPLICATE = "near-duplicate question"
ROUND_TRIP = "round trip: chunk not in the embedder's top-k for its question"
REVIEW = "rejected in review"

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_QUOTES = "\"'“”‘’「」『』《》"


@dataclass
class QA:
    id: str
    chunk_id: str
    doc: str
    question: str
    answer: str
    lang: str
    meta: dict[str, Any] = field(default_factory=dict)


def _json_candidates(text: str) -> list[str]:
    out = [text]
    m = _FENCE.search(text)
    if m:
        out.append(m.group(1).strip())
    for open_, close in (("{", "}"), ("[", "]")):
        if open_ in text and close in text:
            out.append(text[text.index(open_): text.rindex(close) + 1])
    return out


def parse_qa(text: str) -> list[dict[str, str]]:
    """The ``[{question, answer}, ...]`` of a teacher answer: JSON ``{"qa": [...]}`` or a bare list,
    possibly fenced or surrounded by prose. Raises ValueError saying what is wrong."""
    text = (text or "").strip()
    if not text:
        raise ValueError("empty answer")
    data: Any = None
    for cand in _json_candidates(text):
        try:
            data = json.loads(cand)
            break
        except ValueError:
            continue
    else:
        raise ValueError(f"no JSON in {text[:80]!r}")
    if isinstance(data, dict):
        data = next((data[k] for k in ("qa", "questions", "items", "pairs") if isinstance(data.get(k), list)), None)
        if data is None:
            raise ValueError("JSON object without a 'qa' list")
    if not isinstance(data, list) or not data:
        raise ValueError("expected a non-empty list of {question, answer}")
    out = []
    for entry in data:
        if not isinstance(entry, dict) or not isinstance(entry.get("question"), str) \
                or not isinstance(entry.get("answer"), (str, int, float)):
            # ValueError, not TypeError: every parse failure is one kind for the caller (re-ask the teacher)
            raise ValueError(f"entry is not {{question: str, answer: str}}: {str(entry)[:60]!r}")
        out.append({"question": entry["question"], "answer": str(entry["answer"])})
    return out


def clean_answer(answer: str) -> str:
    """Whitespace and one pair of surrounding quotes removed: the only edits allowed before the
    verbatim check (a span is a span; nothing else is normalised)."""
    a = answer.strip()
    if len(a) >= 2 and a[0] in _QUOTES and a[-1] in _QUOTES:
        a = a[1:-1].strip()
    return a


def _squash(text: str) -> str:
    """Case, width and whitespace folded: for "does the question contain the answer"."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text).casefold())


def check_item(question: str, answer: str, chunk: str, max_answer_chars: int) -> str | None:
    """The reason this (question, answer) must go, or None."""
    if not question.strip() or not answer.strip():
        return EMPTY
    if answer not in chunk:
        return NOT_IN_CHUNK
    if max_answer_chars and len(answer) > max_answer_chars:
        return TOO_LONG
    if _squash(answer) in _squash(question):
        return CONTAINS_ANSWER
    return None


def dedupe(items: Iterable[QA], threshold: float) -> tuple[list[QA], list[QA]]:
    """(kept, near-duplicates). A question goes when an earlier kept one is the same text (case,
    width and spacing folded), or is at least ``threshold`` similar (rapidfuzz ratio, 0-100) AND has
    the same answer. The answer check is what keeps "the code of pump Alpha" and "the code of pump
    Beta" apart: short questions that differ in one word score above 90."""
    from rapidfuzz import fuzz, process

    kept: list[QA] = []
    keys: list[str] = []
    exact: dict[str, str] = {}
    by_answer: dict[str, list[int]] = {}
    dropped: list[QA] = []
    for item in items:
        key = " ".join(unicodedata.normalize("NFKC", item.question).casefold().split())
        answer = _squash(item.answer)
        same = by_answer.get(answer, [])
        hit = exact.get(key)
        if hit is None and same:
            best = process.extractOne(key, [keys[i] for i in same], scorer=fuzz.ratio, score_cutoff=threshold)
            hit = kept[same[best[2]]].id if best is not None else None
        if hit is not None:
            item.meta["duplicate_of"] = hit
            dropped.append(item)
            continue
        exact[key] = item.id
        by_answer.setdefault(answer, []).append(len(kept))
        kept.append(item)
        keys.append(key)
    return kept, dropped


def is_cjk_text(text: str, share: float = 0.2) -> bool:
    letters = [c for c in text if not c.isspace()]
    if not letters:
        return False
    cjk = sum(1 for c in letters if "\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf")
    return cjk / len(letters) >= share
