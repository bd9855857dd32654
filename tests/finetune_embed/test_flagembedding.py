"""FlagEmbedding backend: the exact torchrun command, failures surface with the log tail."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest

import ragtune.finetune.embed.flag_backend as fe
from ragtune.core.errors import BackendError
from ragtune.data.embed_sets import TrainRecord
from ragtune.finetune.embed import EmbedFinetuneConfig, flagembedding


def test_command_is_exact(monkeypatch):
    monkeypatch.setattr(fe.shutil, "which", lambda name: "/usr/bin/torchrun" if name == "torchrun" else None)
    cfg = EmbedFinetuneConfig.build(train="t.jsonl", output="out", method="flagembedding", nproc_per_node=4,
                                    per_device_train_batch_size=16, num_train_epochs=2, learning_rate=1e-5,
                                    temperature=0.02, train_group_size=8, pooling="cls", seed=1314)
    cmd = fe.build_command(cfg, "/m/bge", "/d/train.jsonl", "/o/model", "Represent: ", bf16=True,
                           transformers_major=5)
    assert cmd == [
        "/usr/bin/torchrun", "--nproc_per_node", "4", "-m", "FlagEmbedding.finetune.embedder.encoder_only.base",
        "--model_name_or_path", "/m/bge", "--train_data", "/d/train.jsonl", "--output_dir", "/o/model",
        "--train_group_size", "8", "--query_max_len", "64", "--passage_max_len", "256",
        "--learning_rate", "1e-05", "--num_train_epochs", "2.0", "--per_device_train_batch_size", "16",
        "--warmup_steps", "0.1", "--temperature", "0.02", "--sentence_pooling_method", "cls",
        "--normalize_embeddings", "True", "--seed", "1314", "--logging_steps", "10", "--save_strategy", "no",
        "--report_to", "none", "--query_instruction_for_retrieval", "Represent: ",
        "--query_instruction_format", "{}{}", "--bf16"]


def test_command_for_transformers_4_uses_warmup_ratio():
    cfg = EmbedFinetuneConfig.build(train="t.jsonl", output="out", warmup_ratio=0.2)
    cmd = fe.build_command(cfg, "m", "t", "o", "", transformers_major=4)
    assert cmd[cmd.index("--warmup_ratio") + 1] == "0.2" and "--warmup_steps" not in cmd
    assert "--query_instruction_for_retrieval" not in cmd and "--bf16" not in cmd


def test_pooling_auto_follows_the_base_model(tiny_embedder_dir, tmp_path):
    cfg = EmbedFinetuneConfig.build(train="t", output="o")
    assert cfg.pooling == "auto"
    cmd = fe.build_command(cfg, str(tiny_embedder_dir), "t", "o", "", transformers_major=5)
    assert cmd[cmd.index("--sentence_pooling_method") + 1] == "mean"      # the tiny model pools by mean
    assert fe.detect_pooling(tmp_path) == "cls"                             # a plain HF dir: bge's default


def test_command_falls_back_to_python_module_without_torchrun(monkeypatch):
    monkeypatch.setattr(fe.shutil, "which", lambda name: None)
    assert fe.torchrun_prefix(2) == [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]


def test_failure_raises_with_exit_code_and_log_tail(tmp_path):
    script = "import sys\nfor i in range(100): print('line', i)\nprint('CUDA out of memory', file=sys.stderr)\nsys.exit(3)"
    with pytest.raises(BackendError) as err:
        fe.run_logged([sys.executable, "-c", script], tmp_path / "train.log", tail_lines=5)
    msg = err.value.message
    assert "exit code 3" in msg and "CUDA out of memory" in msg and "line 99" in msg and "line 90" not in msg


def test_failure_shows_the_child_exception_above_the_tail(tmp_path):
    script = ("print('[rank0]: ValueError: Some specified arguments are not used')\n"
              "for i in range(60): print('torchrun noise', i)\nraise SystemExit(1)")
    with pytest.raises(BackendError) as err:
        fe.run_logged([sys.executable, "-c", script], tmp_path / "train.log", tail_lines=10)
    assert "ValueError: Some specified arguments are not used" in err.value.message
    assert (tmp_path / "train.log").exists()
    fe.run_logged([sys.executable, "-c", "print('ok')"], tmp_path / "ok.log")  # success: no error


def test_train_file_has_flagembedding_shape(tmp_path):
    recs = [TrainRecord(f"q{i}", [f"p{i}"], [], "inst: ") for i in range(4)]
    path = fe.write_train_file(recs, 2, 0, tmp_path / "t.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(set(r) == {"query", "pos", "neg"} and len(r["neg"]) == 2 and r["pos"][0] not in r["neg"] for r in rows)


@pytest.mark.skipif(importlib.util.find_spec("FlagEmbedding") is not None, reason="FlagEmbedding is installed")
def test_missing_package_is_a_clear_error(tiny_embedder_dir, tmp_path):
    (tmp_path / "t.jsonl").write_text(json.dumps({"query": "q", "pos": ["p"], "neg": ["n"]}) + "\n")
    with pytest.raises(BackendError, match="pip install FlagEmbedding"):
        flagembedding.run(base=str(tiny_embedder_dir), train=str(tmp_path / "t.jsonl"), output=str(tmp_path / "o"),
                      eval_split=0)
    assert not (tmp_path / "o").exists()
