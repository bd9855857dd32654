"""The layer map of docs/architecture.md, enforced: a package imports only the layers below it
(import-linter, configured in pyproject.toml), and `import ragtune` stays light."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contract_holds():
    exe = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(exe), str(ROOT / "pyproject.toml")], cwd=ROOT / "src", capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "KEPT" in out.stdout and "BROKEN" not in out.stdout


def test_a_violation_is_caught(tmp_path):
    """The contract can fail: a core module importing the workflow layer breaks it."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "ragtune", src / "ragtune", ignore=shutil.ignore_patterns("__pycache__"))
    (src / "ragtune" / "core" / "bad.py").write_text("from ..workflow import run  # noqa\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    exe = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(exe), str(tmp_path / "pyproject.toml")], cwd=src, capture_output=True, text=True,
                         env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})
    assert out.returncode != 0 and "ragtune.core.bad -> ragtune.workflow" in out.stdout


def test_import_ragtune_loads_no_heavy_library():
    code = ("import sys, ragtune, ragtune.finetune, ragtune.eval, ragtune.engine.base, ragtune.serve.deploy; "
            "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'fastapi', 'matplotlib') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
