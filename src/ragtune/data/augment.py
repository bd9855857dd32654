"""``ragtune data augment-json``: JSON noise injection for the structured-output (JSON extraction) use case.

A chosen fraction of records (default 25%, chosen with a seeded RNG, so the same seed gives the same
file) gets its INPUT JSON corrupted the way model or upstream output drifts: a dropped quote, a
missing closing bracket, an extra bracket, a trailing comma, a missing comma, single quotes,
unquoted keys, a truncated tail. The clean target (``output``) is kept, so the model learns to read
and repair broken JSON. Every corruption is checked to really be invalid JSON.

Where the JSON comes from (``source``):
- ``input`` (default): the record's ``input`` field (alpaca) or last user message (messages) must
  hold JSON (the whole text, or a {...}/[...] block inside it); that JSON is corrupted in place;
- ``output``: the corrupted serialisation of the clean ``output`` JSON becomes the input (a pure
  "repair this JSON" task).
Records without usable JSON are passed through unchanged and counted.
"""
from __future__ import annotations

import json
import os
import random
import re
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from ..core.config import Config
from ..core.errors import ConfigError
from .formats import detect_format
from .readers import read_records
from .squad import write_records
from .summary import Summary


class AugmentJsonConfig(Config):
    fraction: float = Field(0.25, description="Fraction of records to corrupt (0..1).")
    seed: int = Field(1314, description="Same seed, same output.")
    source: Literal["input", "output"] = Field(
        "input", description="Corrupt the JSON in the input, or put a corrupted copy of the output JSON there.")
    append: bool = Field(False, description="Keep all clean records and append the corrupted copies.")


# -- corruptions: each takes (json text, rng) and returns a changed text or None when not applicable
def _positions(text: str, chars: str) -> list[int]:
    return [i for i, c in enumerate(text) if c in chars]


def drop_quote(text: str, rng: random.Random) -> str | None:
    pos = _positions(text, '"')
    if not pos:
        return None
    i = rng.choice(pos)
    return text[:i] + text[i + 1:]


def drop_closing_bracket(text: str, rng: random.Random) -> str | None:
    pos = _positions(text, "}]")
    if not pos:
        return None
    i = rng.choice(pos)
    return text[:i] + text[i + 1:]


def extra_closing_bracket(text: str, rng: random.Random) -> str | None:
    pos = _positions(text, "}]")
    if not pos:
        return None
    i = rng.choice(pos)
    return text[:i + 1] + text[i] + text[i + 1:]


def trailing_comma(text: str, rng: random.Random) -> str | None:
    pos = [i for i in _positions(text, "}]") if i > 0 and text[:i].rstrip()[-1:] not in "{[,"]
    if not pos:
        return None
    i = rng.choice(pos)
    return text[:i] + "," + text[i:]


def missing_comma(text: str, rng: random.Random) -> str | None:
    pos = _outside_strings(text, ",")
    if not pos:
        return None
    i = rng.choice(pos)
    return text[:i] + " " + text[i + 1:]


def single_quotes(text: str, rng: random.Random) -> str | None:
    return text.replace('"', "'") if '"' in text else None


def unquoted_keys(text: str, rng: random.Random) -> str | None:
    new = re.sub(r'"([A-Za-z_][A-Za-z0-9_]*)"(\s*):', r"\1\2:", text)
    return new if new != text else None


def truncate(text: str, rng: random.Random) -> str | None:
    if len(text) < 4:
        return None
    return text[: rng.randint(len(text) // 2, len(text) - 1)]


CORRUPTIONS: dict[str, Callable[[str, random.Random], str | None]] = {
    f.__name__: f for f in (drop_quote, drop_closing_bracket, extra_closing_bracket, trailing_comma,
                            missing_comma, single_quotes, unquoted_keys, truncate)}


def _outside_strings(text: str, chars: str) -> list[int]:
    out, in_str, esc = [], False, False
    for i, c in enumerate(text):
        if in_str:
            esc = (c == "\\" and not esc)
            if c == '"' and not esc:
                in_str = False
        elif c == '"':
            in_str = True
        elif c in chars:
            out.append(i)
    return out


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except (json.JSONDecodeError, TypeError):
        return False


def corrupt_json(text: str, rng: random.Random) -> tuple[str, str] | None:
    """(corrupted text, corruption name), guaranteed not to parse; None if nothing breaks it."""
    names = list(CORRUPTIONS)
    rng.shuffle(names)
    for name in names:
        new = CORRUPTIONS[name](text, rng)
        if new is not None and new != text and not _is_json(new):
            return new, name
    return None


def find_json_span(text: str) -> tuple[int, int] | None:
    """The whole text if it is a JSON object/array, else the longest {...} / [...] block that parses."""
    stripped = text.strip()
    if stripped[:1] in "{[" and _is_json(stripped):
        start = text.index(stripped[0])
        return start, start + len(stripped)
    best = None
    for open_, close in (("{", "}"), ("[", "]")):
        start = text.find(open_)
        end = text.rfind(close)
        if start != -1 and end > start and _is_json(text[start:end + 1]):
            if best is None or end + 1 - start > best[1] - best[0]:
                best = (start, end + 1)
    return best


def _input_ref(data: dict, fmt: str) -> tuple[Callable[[], str | None], Callable[[str], None]]:
    if fmt == "alpaca":
        return (lambda: data.get("input")), (lambda v: data.__setitem__("input", v))
    users = [m for m in data["messages"] if m.get("role") == "user"]
    last = users[-1] if users else {}
    return (lambda: last.get("content")), (lambda v: last.__setitem__("content", v))


def _output(data: dict, fmt: str) -> str | None:
    if fmt == "alpaca":
        return data.get("output")
    answers = [m for m in data["messages"] if m.get("role") == "assistant"]
    return answers[-1].get("content") if answers else None


def _corrupt_record(data: dict, fmt: str, source: str, rng: random.Random) -> tuple[dict, str] | None:
    data = json.loads(json.dumps(data))   # deep copy: the clean record stays untouched
    get, put = _input_ref(data, fmt)
    if source == "output":
        target = _output(data, fmt)
        if not isinstance(target, str) or not _is_json(target.strip()) or target.strip()[:1] not in "{[":
            return None
        broken = corrupt_json(target.strip(), rng)
        if broken is None:
            return None
        put(broken[0])   # alpaca: the input field; messages: the last user message
        return data, broken[1]
    text = get()
    if not isinstance(text, str):
        return None
    span = find_json_span(text)
    if span is None:
        return None
    broken = corrupt_json(text[span[0]:span[1]], rng)
    if broken is None:
        return None
    put(text[:span[0]] + broken[0] + text[span[1]:])
    return data, broken[1]


def augment_json(path: str | os.PathLike, out: str | os.PathLike, config: AugmentJsonConfig | None = None,
                 **kwargs: Any) -> Summary:
    cfg = config or AugmentJsonConfig.build(**kwargs)
    if not 0 <= cfg.fraction <= 1:
        raise ConfigError(f"fraction must be between 0 and 1, got {cfg.fraction}")
    records = read_records(path)
    fmt = detect_format(records, str(path))
    summary = Summary("augment-json", str(path), str(out), records_in=len(records))
    rng = random.Random(cfg.seed)
    # Try the records in a seeded order until the target count is corrupted, so the fraction holds
    # even when some records carry no usable JSON.
    target = round(cfg.fraction * len(records))
    corrupted: dict[int, dict] = {}
    kinds: Counter[str] = Counter()
    no_json = 0
    for i in rng.sample(range(len(records)), len(records)):
        if len(corrupted) == target:
            break
        result = _corrupt_record(records[i].data, fmt, cfg.source, rng)
        if result is None:
            no_json += 1
            continue
        corrupted[i], kind = result
        kinds[kind] += 1
    if cfg.append:
        items = [r.data for r in records] + [corrupted[i] for i in sorted(corrupted)]
    else:
        items = [corrupted.get(i, r.data) for i, r in enumerate(records)]
    write_records(out, items)
    summary.records_out = len(items)
    summary.notes.update({"corrupted": len(corrupted), "target corrupted": target,
                          "skipped (no usable JSON)": no_json, "corruptions": dict(sorted(kinds.items()))})
    if len(corrupted) < target:
        summary.notes["warning"] = (f"only {len(corrupted)} of {len(records)} records have usable JSON in "
                                    f"'{cfg.source}'; {target} were asked for")
    return summary
