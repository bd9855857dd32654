"""The docs' registry tables are generated (scripts/docs_tables.py): a registered method, engine,
metric or store shows up in the docs, and a stale table fails here."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _check() -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "docs_tables.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT)


def test_docs_tables_are_current():
    result = _check()
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_registry_has_a_table():
    pages = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "docs").glob("*.md"))
    for name in ("methods", "engines", "metrics", "stores"):
        assert f"<!-- registry:{name} -->" in pages, name


def test_a_stale_table_is_reported(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import docs_tables
    finally:
        sys.path.pop(0)
    stale = "x\n<!-- registry:engines -->\n| old |\n<!-- /registry -->\n"
    fresh = docs_tables.render(stale)
    assert fresh != stale and "`builtin`" in fresh and "`llamacpp`" in fresh
    assert docs_tables.render(fresh) == fresh
