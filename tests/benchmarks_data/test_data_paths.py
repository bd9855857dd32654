"""benchmarks/data_paths.py (issue 19h): flag > $RAGTUNE_DATA_DIR > <repo>/../shared/data > the hub."""
import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dp(monkeypatch):
    spec = importlib.util.spec_from_file_location("data_paths", REPO / "benchmarks" / "data_paths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for var in ("RAGTUNE_DATA_DIR", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return module


def test_default_is_shared_data_next_to_the_repo_and_env_overrides(dp, tmp_path, monkeypatch):
    assert dp.data_dir() == REPO.parent / "shared" / "data"
    (tmp_path / "cmrc2018").mkdir()
    (tmp_path / "cmrc2018" / "test.json").write_text("[]")
    monkeypatch.setenv("RAGTUNE_DATA_DIR", str(tmp_path))
    assert dp.data_file("cmrc2018/test.json") == tmp_path / "cmrc2018" / "test.json"
    assert dp.data_file("x", explicit=tmp_path / "cmrc2018" / "test.json") == tmp_path / "cmrc2018" / "test.json"
    with pytest.raises(dp.DataNotFound, match="--test .*nope.json: no such file"):
        dp.data_file("cmrc2018/test.json", flag="--test", explicit=tmp_path / "nope.json")


def test_offline_and_missing_names_the_flag_and_the_env_var(dp, tmp_path, monkeypatch):
    monkeypatch.setenv("RAGTUNE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(dp.DataNotFound) as exc:
        dp.data_file("cmrc2018/train.json", flag="--train")
    text = str(exc.value)
    assert "--train" in text and "RAGTUNE_DATA_DIR" in text and "'cmrc2018'" in text and "offline" in text


def test_missing_file_is_loaded_from_the_hub_once(dp, tmp_path, monkeypatch):
    calls = []

    def load_dataset(name, split):
        calls.append((name, split))
        return [{"question": "q", "answer": "a", "context": "c"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setenv("RAGTUNE_DATA_DIR", str(tmp_path))
    path = dp.data_file("financial_qa_10k/data.json")
    assert path == tmp_path / "financial_qa_10k" / "data.json"
    assert json.loads(path.read_text()) == [{"question": "q", "answer": "a", "context": "c"}]
    assert dp.data_file("financial_qa_10k/data.json") == path
    assert calls == [("virattt/financial-qa-10K", "train")]


def test_no_benchmark_script_hard_codes_a_machine_path():
    for script in sorted((REPO / "benchmarks").glob("*.py")):
        assert "/work/shared" not in script.read_text(encoding="utf-8"), script.name
