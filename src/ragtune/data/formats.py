"""Instruction-data formats: Alpaca and OpenAI messages, detection and lossless conversion.

Alpaca::

    {"instruction": str, "input": str?, "output": str, "system": str?, "history": [[str, str], ...]?}

OpenAI messages::

    {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}

Conversion rules (both directions, lossless):
- ``system`` <-> a leading system message; an empty ``system`` means "no system message".
- ``history`` pairs <-> earlier user/assistant turns; ``instruction``(+``input``) / ``output`` <->
  the last user/assistant turn.
- ``input`` is appended to the instruction with a newline (what LLaMA-Factory does, so the model
  sees the same text either way). To split it back exactly, a record with a non-empty ``input``
  keeps it under the extra top-level key ``alpaca_input``; readers of the messages format ignore
  unknown top-level keys.
Round trip: ``messages_to_alpaca(alpaca_to_messages(r)) == normalize_alpaca(r)`` (optional fields
filled with their defaults) and ``alpaca_to_messages(messages_to_alpaca(m)) == m``.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, Literal

from ..core.errors import DataError

Format = Literal["alpaca", "messages"]
FORMATS: tuple[Format, ...] = ("alpaca", "messages")
ROLES = ("system", "user", "assistant")
INPUT_KEY = "alpaca_input"
INPUT_JOIN = "\n"


def detect_record_format(data: Any) -> Format | None:
    """Which format one record is in, by its keys; None when it looks like neither."""
    if not isinstance(data, dict):
        return None
    if "messages" in data:
        return "messages"
    if "instruction" in data or "output" in data:
        return "alpaca"
    return None


def detect_format(records: Iterable[Any], file: str | None = None) -> Format:
    """The format of a whole file, checked on EVERY record (a file whose first rows are Alpaca and
    whose later rows are messages is an error naming the first record that disagrees)."""
    seen: dict[Format, int] = {}
    counts: Counter[Format] = Counter()
    for index, rec in enumerate(records):
        data = getattr(rec, "data", rec)
        idx = getattr(rec, "index", index)
        fmt = detect_record_format(data)
        if fmt is None:
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise DataError(f"record is neither Alpaca (instruction/output) nor OpenAI messages "
                            f"(messages); it has {keys}", file=file, record=idx)
        counts[fmt] += 1
        seen.setdefault(fmt, idx)
    if not counts:
        raise DataError("no records", file=file)
    if len(counts) > 1:
        minority = min(counts, key=lambda f: counts[f])
        majority = max(counts, key=lambda f: counts[f])
        raise DataError(f"mixed formats: {counts[majority]} {majority} records and {counts[minority]} "
                        f"{minority} records; the first {minority} record is here",
                        file=file, record=seen[minority], hint="convert the file to one format")
    return next(iter(counts))


def _opt_str(value: Any) -> str:
    return "" if value is None else value


def normalize_alpaca(rec: dict) -> dict:
    """All five fields, optional ones with their defaults; extra keys kept after them."""
    out = {"instruction": rec["instruction"], "input": _opt_str(rec.get("input")),
           "output": rec["output"], "system": _opt_str(rec.get("system")),
           "history": [list(p) for p in (rec.get("history") or [])]}
    out.update({k: v for k, v in rec.items() if k not in out})
    return out


def alpaca_user_text(instruction: str, input_: str) -> str:
    if not input_:
        return instruction
    return f"{instruction}{INPUT_JOIN}{input_}" if instruction else input_


def alpaca_to_messages(rec: dict) -> dict:
    """Alpaca record -> ``{"messages": [...]}`` (plus ``alpaca_input`` when ``input`` is set)."""
    messages = []
    if rec.get("system"):
        messages.append({"role": "system", "content": rec["system"]})
    for user, assistant in rec.get("history") or []:
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": assistant})
    input_ = _opt_str(rec.get("input"))
    messages.append({"role": "user", "content": alpaca_user_text(rec["instruction"], input_)})
    messages.append({"role": "assistant", "content": rec["output"]})
    out: dict[str, Any] = {"messages": messages}
    if input_:
        out[INPUT_KEY] = input_
    extras = {k: v for k, v in rec.items() if k not in ("instruction", "input", "output", "system", "history")}
    out.update(extras)
    return out


def _split_input(user: str, input_: str | None) -> tuple[str, str]:
    if not input_:
        return user, ""
    if user == input_:
        return "", input_
    suffix = INPUT_JOIN + input_
    if user.endswith(suffix):
        return user[: -len(suffix)], input_
    return user, ""   # the user text was edited after conversion: keep it whole


def messages_to_alpaca(rec: dict) -> dict:
    """``{"messages": [...]}`` -> Alpaca. The conversation must be valid (see ``check_messages``)."""
    messages = list(rec["messages"])
    system = ""
    if messages and messages[0]["role"] == "system":
        system = messages.pop(0)["content"]
    pairs = [(messages[i]["content"], messages[i + 1]["content"]) for i in range(0, len(messages), 2)]
    *history, (user, output) = pairs
    instruction, input_ = _split_input(user, rec.get(INPUT_KEY))
    out = {"instruction": instruction, "input": input_, "output": output, "system": system,
           "history": [[u, a] for u, a in history]}
    out.update({k: v for k, v in rec.items() if k not in ("messages", INPUT_KEY)})
    return out


def to_messages(data: dict, fmt: Format | None = None) -> list[dict]:
    """The conversation of a record in either format, as a plain message list (for prompts)."""
    fmt = fmt or detect_record_format(data)
    if fmt == "alpaca":
        return alpaca_to_messages(data)["messages"]
    return [{"role": m["role"], "content": m["content"]} for m in data["messages"]]


def convert_record(data: dict, to: Format, fmt: Format | None = None) -> dict:
    fmt = fmt or detect_record_format(data)
    if fmt == to:
        return normalize_alpaca(data) if to == "alpaca" else dict(data)
    return alpaca_to_messages(data) if to == "messages" else messages_to_alpaca(data)
