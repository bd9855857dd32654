import json
import os
import shutil
import subprocess
import sys

import pytest

from ragtune.core.errors import ModelCorruptedError, ModelNotFoundError
from ragtune.models import list_models, resolve_model, verify_materialised
from ragtune.models.convert import write_manifest


def test_local_llm_dir_resolves_as_llm(tiny_llm_dir):
    m = resolve_model(tiny_llm_dir)
    assert (m.kind, m.source, m.path) == ("llm", "local", tiny_llm_dir.resolve())


def test_local_embedder_dir_resolves_as_embedding(tiny_embedder_dir):
    assert resolve_model(str(tiny_embedder_dir)).kind == "embedding"


def test_gguf_file_resolves_with_gguf_file(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    m = resolve_model(f)
    assert (m.kind, m.gguf_file, m.path) == ("llm", "m.gguf", tmp_path.resolve())


def test_missing_local_path_is_clear(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="not a model directory"):
        resolve_model(tmp_path / "empty")


def test_offline_hub_id_names_bundled_defaults(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as exc:
        resolve_model("no-such/model")
    text = str(exc.value)
    assert "gemma-3-270m" in text and "all-MiniLM-L6-v2" in text and "/path/to/model" in text


def test_cli_pull_unknown_offline_exits_nonzero():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "ragtune.cli", "models", "pull", "no-such/model"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 1
    assert "gemma-3-270m" in out.stderr


def test_bundled_minilm_is_ready_and_listed():
    m = resolve_model("all-MiniLM-L6-v2")
    assert m.kind == "embedding" and (m.path / "modules.json").exists()
    rows = {r.name: r for r in list_models()}
    assert rows["all-MiniLM-L6-v2"].ready and rows["all-MiniLM-L6-v2"].size_bytes > 50e6
    # fresh RAGTUNE_HOME (per-test fixture): gemma is known but not materialised, and says how to get it
    assert not rows["gemma-3-270m"].ready
    assert "ragtune models pull gemma-3-270m" in rows["gemma-3-270m"].note


def test_unmaterialised_bundled_without_pull_says_how():
    with pytest.raises(ModelNotFoundError, match="ragtune models pull gemma-3-270m"):
        resolve_model("gemma-3-270m", pull=False)


def test_manifest_detects_truncation_and_missing_files(tiny_llm_dir, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(tiny_llm_dir, d)
    write_manifest(d, name="tiny")
    verify_materialised(d, deep=True)
    weights = d / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelCorruptedError, match="model.safetensors has"):
        verify_materialised(d)
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))     # same size, one bit flipped
    verify_materialised(d)                                       # cheap check passes...
    with pytest.raises(ModelCorruptedError, match="sha256"):
        verify_materialised(d, deep=True)                        # ...the deep one does not
    weights.unlink()
    with pytest.raises(ModelCorruptedError, match="missing"):
        verify_materialised(d)
    (d / "ragtune_manifest.json").unlink()
    with pytest.raises(ModelCorruptedError, match="interrupted"):
        verify_materialised(d)


def test_cache_entry_without_manifest_is_not_ready(monkeypatch, tmp_path):
    # an interrupted conversion renamed into place by hand (or a foreign dir) is never "ready"
    from ragtune.models.registry import bundled_cache_dir, is_materialised

    target = bundled_cache_dir("gemma-3-270m")
    target.mkdir(parents=True)
    (target / "config.json").write_text(json.dumps({"architectures": ["Gemma3ForCausalLM"]}))
    assert not is_materialised("gemma-3-270m")


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}],
                         ids=["hf-offline", "unreachable-endpoint"])
def test_cli_pull_without_a_reachable_hub_says_unreachable_not_missing(tmp_path, env):
    """Issue 19a: a connection error is not "does not exist on the hub"; the message says the hub is
    unreachable and how to use a local copy."""
    full = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", **env}
    out = subprocess.run([sys.executable, "-m", "ragtune.cli", "models", "pull", "BAAI/bge-large-zh-v1.5"],
                         capture_output=True, text=True, env=full, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "does not exist" not in out.stderr
    assert "Traceback" not in out.stderr
    assert "hub is unreachable" in out.stderr
    assert "/path/to/bge-large-zh-v1.5" in out.stderr and "hf download BAAI/bge-large-zh-v1.5" in out.stderr
    assert "HF_HOME" in out.stderr
