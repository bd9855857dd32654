"""The docs' tables of fine-tune methods, engines, metrics and stores, generated from the registries.

    python scripts/docs_tables.py          # rewrite the tables in docs/*.md
    python scripts/docs_tables.py --check  # exit 1 if a table is out of date (tests/test_docs_tables.py)

A table lives between ``<!-- registry:NAME -->`` and ``<!-- /registry -->`` in a docs page; only that
part of the page is rewritten.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"(<!-- registry:(\w+) -->\n)(.*?)(<!-- /registry -->)", re.S)


def _row(*cells: str) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def methods() -> str:
    from ragtune.finetune import METHODS

    rows = ["| method | kind | what it does | its own settings |", "|---|---|---|---|"]
    for name, m in METHODS.items():
        own = [f for f in m.config_cls.model_fields if f not in _common(m)]
        rows.append(_row(f"`{name}`", m.kind, m.description, ", ".join(f"`{f}`" for f in own) or "—"))
    return "\n".join(rows)


def _common(method) -> set[str]:
    from ragtune.finetune import FinetuneConfig
    from ragtune.finetune.llm.config import LLMFinetuneConfig

    base = LLMFinetuneConfig if issubclass(method.config_cls, LLMFinetuneConfig) else FinetuneConfig
    return set(base.model_fields)


def engines() -> str:
    from ragtune.engine.base import ENGINES

    rows = ["| engine | runs | what it is | settings |", "|---|---|---|---|"]
    for name, e in ENGINES.items():
        rows.append(_row(f"`{name}`", "in this process" if e.in_process else "own server process", e.description,
                         ", ".join(f"`{f}`" for f in e.Settings.model_fields)))
    return "\n".join(rows)


def metrics() -> str:
    from ragtune.eval.base import METRICS

    rows = ["| metric | title | kind | parameters | what it measures |", "|---|---|---|---|---|"]
    for name, m in METRICS.items():
        doc = " ".join((m.__doc__ or "").split()).split(". ")[0].rstrip(".")
        rows.append(_row(f"`{name}`", m.title, m.kind, ", ".join(f"`{f}`" for f in m.Params.model_fields) or "—",
                         doc))
    return "\n".join(rows)


def stores() -> str:
    from ragtune.rag.store import STORES

    rows = ["| store | what it is |", "|---|---|"]
    for name, s in STORES.items():
        rows.append(_row(f"`{name}`", " ".join((s.__doc__ or "").split()).split(". ")[0].rstrip(".")))
    return "\n".join(rows)


TABLES = {"methods": methods, "engines": engines, "metrics": metrics, "stores": stores}


def render(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + TABLES[m.group(2)]() + "\n" + m.group(4), text)


def main() -> int:
    check = "--check" in sys.argv
    stale = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        new = render(text)
        if new != text:
            stale.append(page.name)
            if not check:
                page.write_text(new, encoding="utf-8")
    if check and stale:
        print("out of date (run python scripts/docs_tables.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
