"""`ragtune finetune llm` end to end on the tiny model, and its error messages."""
from __future__ import annotations

import json

from .conftest import span_items, write_json


def test_cli_lora_run(tiny_llm_dir, tmp_path, capsys):
    from ragtune.cli import main

    train = write_json(tmp_path / "t.json", span_items(8, seed=2))
    cfg = tmp_path / "job.yaml"
    cfg.write_text("learning_rate: 1.0e-3\nlora_rank: 4\nmerge: false\n")
    code = main(["finetune", "llm", "--base", str(tiny_llm_dir), "--train", str(train), "--output",
                 str(tmp_path / "out"), "--config", str(cfg), "--max-steps", "2", "--lora-target", "q_proj,v_proj",
                 "--per-device-train-batch-size", "2"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["method"] == "lora"
    saved = (tmp_path / "out/config.yaml").read_text()
    assert "learning_rate: 0.001" in saved and "- q_proj" in saved
    adapter = json.loads((tmp_path / "out/adapter/adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"] and adapter["r"] == 4


def test_cli_errors(tiny_llm_dir, tmp_path, capsys):
    from ragtune.cli import main

    train = write_json(tmp_path / "t.json", span_items(4, seed=2))
    base = ["finetune", "llm", "--base", str(tiny_llm_dir), "--train", str(train), "--output", str(tmp_path / "o")]
    assert main(base + ["--method", "freeze", "--lora-rank", "4"]) == 1
    assert "'lora_rank' does not apply to method 'freeze' (it is a setting of llamafactory, lora, dora)" in capsys.readouterr().err
    assert main(base + ["--learning-rate", "fast"]) == 1
    assert "invalid value for 'learning_rate'" in capsys.readouterr().err
    assert main(["finetune", "llm", "--train", str(train)]) == 1
    assert "missing required setting(s): base, output" in capsys.readouterr().err
