"""`ragtune run` re-run after the data or a hyper-parameter changed. Seen before: it forced
resume=True whenever checkpoints/ existed, trained 0 steps, kept a bit-identical adapter and wrote
the new learning rate into config.yaml. Now the fine-tune stage starts over and the log says why."""
from __future__ import annotations

import json

import yaml

from ragtune.cli import main
from ragtune.data.manuals import generate_manuals, split_by_passage

from ..run.test_run import write_config  # the run tests' config (their squad_files fixture: conftest.py)


def _adapter_bytes(run_dir) -> bytes:
    return (run_dir / "finetune_llm" / "model" / "adapter" / "adapter_model.safetensors").read_bytes()


def test_rerun_with_new_data_and_learning_rate_trains_again(tmp_path, squad_files, tiny_llm_dir,
                                                            tiny_embedder_dir, capsys):
    run_dir = tmp_path / "run"
    cfg = write_config(tmp_path / "run.yaml", squad_files, tiny_llm_dir, tiny_embedder_dir, run_dir,
                       learning_rate=1e-4, max_samples=None, max_steps=4, save_steps=2)
    data = yaml.safe_load(cfg.read_text())
    data["eval"] = {"metrics": ["exact"]}
    cfg.write_text(yaml.safe_dump(data))
    assert main(["run", str(cfg)]) == 0
    capsys.readouterr()
    first = _adapter_bytes(run_dir)
    first_metrics = json.loads((run_dir / "finetune_llm" / "model" / "metrics.json").read_text())

    more, _ = split_by_passage(generate_manuals(14, 3, seed=7), 0.3, seed=7)     # new training rows
    (tmp_path / "train2.json").write_text(json.dumps(more))
    data["data"]["train"] = str(tmp_path / "train2.json")
    data["llm"]["finetune"]["learning_rate"] = 5e-3
    cfg.write_text(yaml.safe_dump(data))
    assert main(["-v", "run", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "finetune_llm" in out and "prepare_data       skipped" not in out
    metrics = json.loads((run_dir / "finetune_llm" / "model" / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["history"][0]["step"] == 1          # trained again, from step 1
    assert metrics["first_loss"] != first_metrics["first_loss"]                   # on the new data
    assert _adapter_bytes(run_dir) != first
    log = (run_dir / "finetune_llm" / "log.txt").read_text()
    assert "not resuming" in log and "the training data changed" in log and "learning_rate: 0.0001 -> 0.005" in log
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["llm"]["finetune"]["learning_rate"] == 5e-3
