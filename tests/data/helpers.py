"""Small data builders for the data tests (every test makes its own data; no shared data sets)."""
from __future__ import annotations

import json
from pathlib import Path


def write_json(path: Path, items) -> Path:
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return path


def write_jsonl(path: Path, items, raw_lines: dict[int, str] | None = None) -> Path:
    """One JSON object per line; ``raw_lines`` puts literal (possibly broken) text at given positions."""
    lines = [json.dumps(i, ensure_ascii=False) for i in items]
    for pos, text in sorted((raw_lines or {}).items()):
        lines.insert(pos, text)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def alpaca(i: int, **kw) -> dict:
    rec = {"instruction": f"question {i}?", "input": "", "output": f"answer {i}."}
    rec.update(kw)
    return rec
