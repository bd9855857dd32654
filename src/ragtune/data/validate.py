"""``ragtune data validate``: check every record of an instruction-data file and explain each problem.

Errors (make a record invalid; the CLI exits non-zero): invalid JSON line, unknown format, mixed
formats, missing required field, wrong type, empty output, roles out of order / unknown role, a
history pair that is not two strings, duplicate record. Over-long samples (for ``cutoff_len`` and a
tokenizer) are counted, not errors: training truncates them, the user decides.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.log import get_logger
from .formats import FORMATS, Format, detect_record_format, to_messages
from .readers import BadLine, Record, read_records, read_rows

log = get_logger(__name__)

ERROR_KINDS = ("invalid_json", "unknown_format", "mixed_format", "missing_field", "wrong_type",
               "empty_input", "empty_output", "role_order", "bad_history", "duplicate")


@dataclass
class Issue:
    kind: str
    file: str
    record: int
    field: str | None
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}: record {self.record}"
        if self.line is not None:
            where += f" (line {self.line})"
        if self.field:
            where += f", field '{self.field}'"
        return f"{where}: {self.message} [{self.kind}]"


@dataclass
class ValidationReport:
    file: str
    format: str | None
    total: int
    issues: list[Issue] = field(default_factory=list)
    cutoff_len: int | None = None
    over_long: int | None = None          # samples longer than cutoff_len (tokens), when checked
    max_tokens: int | None = None
    mean_tokens: float | None = None
    lengths: list[int] | None = field(default=None, repr=False)   # tokens per valid sample, in order
    foreign: str | None = None            # a known non-training shape (SQuAD, eval set ...): what to do

    @property
    def invalid_records(self) -> set[int]:
        return {i.record for i in self.issues}

    @property
    def valid(self) -> int:
        return self.total - len(self.invalid_records)

    @property
    def ok(self) -> bool:
        """No invalid record, and at least one record: an empty file trains nothing."""
        return not self.issues and self.total > 0

    def counts(self) -> dict[str, int]:
        return dict(Counter(i.kind for i in self.issues))

    def summary(self, max_issues: int = 50) -> str:
        """Issues with the same kind, field and message are one line (how many records, the first
        few of them), so a file of the wrong shape does not print one identical line per row."""
        groups = group_issues(self.issues)
        lines = [_group_line(g) for g in groups[:max_issues]]
        if self.total == 0:
            lines.append(f"{self.file}: holds no records (empty file)")
        if len(groups) > max_issues:
            lines.append(f"... and {len(groups) - max_issues} more kinds of issues")
        if self.foreign:
            lines.append(self.foreign)
        lines.append(f"{self.file}: {self.total} records ({self.format or 'unknown format'}), "
                     f"{self.valid} valid, {len(self.invalid_records)} invalid")
        if self.issues:
            lines.append("  issues: " + ", ".join(f"{k}={v}" for k, v in sorted(self.counts().items())))
        if self.cutoff_len is not None:
            lines.append(f"  over cutoff_len={self.cutoff_len}: {self.over_long} samples "
                         f"(max {self.max_tokens} tokens, mean {self.mean_tokens:.0f})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("lengths")
        d.update(valid=self.valid, invalid=len(self.invalid_records), counts=self.counts(), ok=self.ok)
        return d


GROUP_SHOWN = 5   # record indices shown for an issue shared by many records


def group_issues(issues: list[Issue]) -> list[list[Issue]]:
    """Issues grouped by (kind, field, message), in order of first appearance."""
    groups: dict[tuple[str, str | None, str], list[Issue]] = {}
    for issue in issues:
        groups.setdefault((issue.kind, issue.field, issue.message), []).append(issue)
    return list(groups.values())


def _group_line(group: list[Issue]) -> str:
    if len(group) == 1:
        return str(group[0])
    first = group[0]
    shown = ", ".join(str(i.record) for i in group[:GROUP_SHOWN]) + (", ..." if len(group) > GROUP_SHOWN else "")
    where = f"{first.file}: {len(group)} records ({shown})"
    if first.field:
        where += f", field '{first.field}'"
    return f"{where}: {first.message} [{first.kind}]"


def _convert_hint(file: str, what: str) -> str:
    out = Path(file).with_name(Path(file).stem + "_alpaca.json")
    return (f"{file}: this looks like {what}, not instruction data; convert it with "
            f"`ragtune data convert --from squad --to alpaca {file} {out}` "
            f"(or `ragtune data evalset {file} EVAL.json` for an eval set)")


def foreign_shape(file: str, data: list[Any]) -> str | None:
    """A sentence naming a known non-training shape of the records and what to do with it, or None."""
    dicts = [d for d in data if isinstance(d, dict)]
    if not dicts or len(dicts) < len(data) / 2:
        return None

    def share(pred) -> float:
        return sum(1 for d in dicts if pred(d)) / len(dicts)

    if share(lambda d: isinstance(d.get("paragraphs"), list)) > 0.5:
        return _convert_hint(file, "SQuAD/CMRC (articles -> paragraphs -> qas)")
    if share(lambda d: {"context", "question", "answers"} <= set(d)) > 0.5:
        return _convert_hint(file, "SQuAD/CMRC rows (context, question, answers)")
    if share(lambda d: "query" in d and ("pos" in d or "neg" in d)) > 0.5:
        return (f"{file}: this looks like an embedding training set (query, pos, neg), not LLM instruction "
                f"data; it trains an embedder: `ragtune finetune embed --train {file} ...`")
    if share(lambda d: "query" in d and "corpus" in d) > 0.5:
        return (f"{file}: this looks like an embedding eval set (query, corpus): it is scored by "
                "`ragtune finetune embed` / `ragtune eval`, not trained on as instruction data")
    if share(lambda d: isinstance(d.get("conversations"), list)) > 0.5:
        return (f"{file}: this looks like ShareGPT (conversations of {{from, value}}); write each record as "
                "OpenAI messages ({\"messages\": [{\"role\": \"user\"|\"assistant\", \"content\": ...}]}), "
                "which ragtune reads")
    if share(lambda d: {"question", "answer"} <= set(d) and "instruction" not in d) > 0.5:
        return (f"{file}: this looks like question/answer rows (question, answer[, context]); rename them to "
                "Alpaca fields: instruction (the question, with the context), output (the answer)")
    return None


class _Checker:
    """Collects the issues of one record; ``add`` names the field."""

    def __init__(self, file: str, rec: Record):
        self.file, self.rec = file, rec
        self.issues: list[Issue] = []

    def add(self, kind: str, fld: str | None, message: str) -> None:
        self.issues.append(Issue(kind, self.file, self.rec.index, fld, message, self.rec.line))

    def require_str(self, data: dict, key: str, required: bool) -> bool:
        if key not in data or data[key] is None:
            if required:
                self.add("missing_field", key, "required field is missing")
            return False
        if not isinstance(data[key], str):
            self.add("wrong_type", key, f"must be a string, got {type(data[key]).__name__}")
            return False
        return True


def _check_alpaca(c: _Checker, data: dict) -> None:
    has_instruction = c.require_str(data, "instruction", True)
    if c.require_str(data, "output", True) and not data["output"].strip():
        c.add("empty_output", "output", "output is empty")
    has_input = c.require_str(data, "input", False)
    if has_instruction and not data["instruction"].strip() and not (has_input and data["input"].strip()):
        c.add("empty_input", "instruction", "instruction and input are both empty: there is no question")
    c.require_str(data, "system", False)
    history = data.get("history")
    if history is None:
        return
    if not isinstance(history, list):
        c.add("wrong_type", "history", f"must be a list of [instruction, answer] pairs, got {type(history).__name__}")
        return
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            c.add("bad_history", f"history[{i}]", f"must be two strings [instruction, answer], got {json.dumps(pair, ensure_ascii=False)[:80]}")


def _check_messages(c: _Checker, data: dict) -> None:
    messages = data["messages"]
    if not isinstance(messages, list):
        c.add("wrong_type", "messages", f"must be a list of {{role, content}} objects, got {type(messages).__name__}")
        return
    if not messages:
        c.add("missing_field", "messages", "has no messages")
        return
    roles = []
    for i, m in enumerate(messages):
        name = f"messages[{i}]"
        if not isinstance(m, dict):
            c.add("wrong_type", name, f"must be an object with role and content, got {type(m).__name__}")
            return
        for key in ("role", "content"):
            if key not in m or m[key] is None:
                c.add("missing_field", f"{name}.{key}", "required field is missing")
                return
        if not isinstance(m["content"], str):
            c.add("wrong_type", f"{name}.content", f"must be a string, got {type(m['content']).__name__}")
            return
        if m["role"] not in ("system", "user", "assistant"):
            c.add("role_order", f"{name}.role", f"unknown role {m['role']!r}; valid: system, user, assistant")
            return
        if m["role"] == "user" and not m["content"].strip():
            c.add("empty_input", f"{name}.content", "a user turn is empty: there is no question")
        roles.append(m["role"])
    _check_role_order(c, roles)
    if roles[-1] == "assistant" and not messages[-1]["content"].strip():
        c.add("empty_output", f"messages[{len(messages) - 1}].content", "the final assistant answer is empty")


def _check_role_order(c: _Checker, roles: list[str]) -> None:
    """Optional system first, then user/assistant strictly alternating, ending with assistant."""
    start = 1 if roles[0] == "system" else 0
    for i, role in enumerate(roles[start:], start=start):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if role != expected:
            c.add("role_order", f"messages[{i}].role",
                  f"expected {expected!r} here, got {role!r} (order: [system], user, assistant, user, ...)")
            return
    if roles[-1] != "assistant":
        c.add("role_order", f"messages[{len(roles) - 1}].role",
              "the conversation must end with an assistant answer to train on")


def _duplicate_key(data: dict, fmt: Format) -> str:
    return json.dumps(to_messages(data, fmt), ensure_ascii=False, sort_keys=True)


def validate(path: str | os.PathLike, *, cutoff_len: int | None = None, tokenizer: Any = None,
             prompt: Any = None) -> ValidationReport:
    """Validate ``path`` (JSON/JSONL/CSV/Parquet, Alpaca or messages). ``tokenizer`` is a model
    reference (name/dir, resolved with ``ragtune.models.resolve_model``) or a loaded tokenizer;
    with ``cutoff_len`` it counts samples whose rendered prompt+answer is longer."""
    file = str(path)
    records = read_records(path, keep_bad_lines=True)
    report = ValidationReport(file=file, format=None, total=len(records))
    formats: dict[int, Format] = {}
    for r in records:
        if isinstance(r, BadLine):
            report.issues.append(Issue("invalid_json", file, r.index, None, f"not valid JSON ({r.error})", r.line))
            continue
        fmt = detect_record_format(r.data)
        if fmt is None:
            keys = sorted(r.data) if isinstance(r.data, dict) else type(r.data).__name__
            report.issues.append(Issue("unknown_format", file, r.index, None,
                                       f"neither Alpaca (instruction/output) nor messages; has {keys}", r.line))
        else:
            formats[r.index] = fmt
    if not formats:
        report.foreign = foreign_shape(file, [r.data for r in records if not isinstance(r, BadLine)])
    counts = Counter(formats.values())
    report.format = max(FORMATS, key=lambda f: counts[f]) if counts else None
    good: list[tuple[Record, Format]] = []
    for r in records:
        if isinstance(r, BadLine) or r.index not in formats:
            continue
        c = _Checker(file, r)
        fmt = formats[r.index]
        if fmt != report.format:
            assert report.format is not None   # formats, hence counts, is not empty here
            c.add("mixed_format", None, f"this record is {fmt} but the file is {report.format} "
                                        f"({counts[report.format]} of {len(formats)} records)")
        else:
            (_check_alpaca if fmt == "alpaca" else _check_messages)(c, r.data)
        report.issues.extend(c.issues)
        if not c.issues:
            good.append((r, fmt))
    _find_duplicates(report, good)
    if cutoff_len is not None:
        _count_over_long(report, [r for r, _ in good], cutoff_len, tokenizer, prompt)
    report.issues.sort(key=lambda i: (i.record, ERROR_KINDS.index(i.kind)))
    return report


def _find_duplicates(report: ValidationReport, good: list[tuple[Record, Format]]) -> None:
    first: dict[str, Record] = {}
    for r, fmt in good:
        key = _duplicate_key(r.data, fmt)
        if key in first:
            report.issues.append(Issue("duplicate", report.file, r.index, None,
                                       f"duplicate of {first[key].where} (same conversation)", r.line))
        else:
            first[key] = r


def load_tokenizer(ref: Any):
    """A loaded tokenizer as is, or a model reference resolved like every other ragtune model."""
    if ref is None or not isinstance(ref, (str, os.PathLike)):
        return ref
    from transformers import AutoTokenizer

    from ..models import resolve_model

    resolved = resolve_model(str(ref))
    kwargs = {"gguf_file": resolved.gguf_file} if resolved.gguf_file else {}
    return AutoTokenizer.from_pretrained(str(resolved.path), **kwargs)


def sample_token_lengths(tokenizer: Any, conversations: list[list[dict]], prompt: Any = None,
                         batch_size: int = 256) -> list[int]:
    """Token count of each conversation as training renders it (``ragtune.core.prompt.render_turns``,
    BOS included), so "over-long" means what the trainer will truncate."""
    from tqdm.auto import tqdm

    from ..core.prompt import PromptConfig, bos_prefix, render_turns

    cfg = PromptConfig.coerce(prompt)
    texts = ["".join(t for t, _ in render_turns(tokenizer, conv, cfg)) for conv in conversations]
    lengths: list[int] = []
    for start in tqdm(range(0, len(texts), batch_size), desc="tokenizing", unit="batch",
                      disable=len(texts) <= batch_size):
        batch = texts[start:start + batch_size]
        ids = tokenizer(batch, add_special_tokens=False)["input_ids"]
        lengths.extend(len(i) + int(bos_prefix(tokenizer, t)) for i, t in zip(ids, batch))
    return lengths


def _count_over_long(report: ValidationReport, records: list[Record], cutoff_len: int,
                     tokenizer: Any, prompt: Any) -> None:
    from ..core.errors import ConfigError

    if tokenizer is None:
        raise ConfigError("cutoff_len needs a tokenizer to count tokens",
                          hint="pass --tokenizer MODEL (e.g. gemma-3-270m or a local model dir)")
    tok = load_tokenizer(tokenizer)
    lengths = sample_token_lengths(tok, [to_messages(r.data) for r in records], prompt)
    report.cutoff_len = cutoff_len
    report.lengths = lengths
    report.over_long = sum(n > cutoff_len for n in lengths)
    report.max_tokens = max(lengths, default=0)
    report.mean_tokens = sum(lengths) / len(lengths) if lengths else 0.0


def validate_path_or_raise(path: str | os.PathLike, **kwargs: Any) -> ValidationReport:
    """``validate`` that raises :class:`DataError` (naming the first problem) when any record is bad:
    what trainers call before they start."""
    from ..core.errors import DataError

    report = validate(path, **kwargs)
    if report.total == 0:
        raise DataError("the training file holds no records", file=str(path))
    if not report.ok:
        first = report.issues[0]
        raise DataError(f"{len(report.invalid_records)} invalid records; first: {first.message}",
                        file=first.file, record=first.record, field=first.field,
                        hint=report.foreign or f"run `ragtune data validate {Path(path)}` for the full list")
    return report


def plot_lengths(report: ValidationReport, path: str | os.PathLike) -> Path:
    """PNG histogram of sample lengths with the cutoff marked (needs a report with lengths)."""
    from ..core.errors import ConfigError
    from ..core.io import atomic_open

    if not report.lengths:
        raise ConfigError("no token lengths to plot", hint="pass --cutoff-len and --tokenizer")
    from ..core.plotting import figure

    fig, ax = figure(figsize=(7, 4))
    ax.hist(report.lengths, bins=50, color="#4c72b0")
    ax.axvline(report.cutoff_len, color="#c44e52", linestyle="--",
               label=f"cutoff_len={report.cutoff_len} ({report.over_long} over)")
    ax.set_xlabel("tokens per sample (prompt + answer, as trained)")
    ax.set_ylabel("samples")
    ax.set_title(f"{Path(report.file).name}: {len(report.lengths)} samples, mean {report.mean_tokens:.0f}, "
                 f"max {report.max_tokens}", fontsize=10)
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    return Path(path)


def load_conversations(path: str | os.PathLike, max_samples: int | None = None, with_total: bool = False):
    """The one loader of training conversations (every trainer and backend calls it): the file is
    read by the one reader and checked by :func:`validate` (role order, duplicates, empty answers,
    types ...), so a file that ``ragtune data validate`` rejects never trains and one it accepts
    always does. Returns the conversations of the first ``max_samples`` records (all by default;
    the caller logs how many of how many: never silently)."""
    validate_path_or_raise(path)
    rows = read_rows(path)
    total = len(rows)
    if max_samples is not None and max_samples < total:
        rows = rows[:max_samples]
    convs = [to_messages(r.data) for r in rows]
    return (convs, total) if with_total else convs
