"""`ragtune run` on tiny models: the chain completes, a re-run skips every stage, bad YAML is clear."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from ragtune.cli import main
from ragtune.core.errors import ConfigError
from ragtune.workflow.run import RunConfig
from ragtune.data.manuals import generate_manuals, split_by_passage


@pytest.fixture(scope="module")
def squad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("squad")
    train, test = split_by_passage(generate_manuals(10, 3, seed=1), 0.3, seed=1)
    (d / "train.json").write_text(json.dumps(train))
    (d / "test.json").write_text(json.dumps(test[:4]))
    return d


def write_config(path, squad_files, tiny_llm_dir, tiny_embedder_dir, run_dir, **finetune):
    cfg = {
        "run_dir": str(run_dir),
        "data": {"train": str(squad_files / "train.json"), "eval": str(squad_files / "test.json")},
        "llm": {"base": str(tiny_llm_dir), "method": "lora",
                "finetune": {"learning_rate": 1e-3, "cutoff_len": 1000, "num_train_epochs": 1,
                             "max_samples": 6, **finetune},
                "infer": {"max_tokens": 4}},
        "eval": {"metrics": ["exact", "cosine", "origin"], "embed": str(tiny_embedder_dir)},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_run_completes_then_skips_everything(tmp_path, squad_files, tiny_llm_dir, tiny_embedder_dir, capsys):
    cfg = write_config(tmp_path / "run.yaml", squad_files, tiny_llm_dir, tiny_embedder_dir, tmp_path / "run")
    assert main(["run", str(cfg)]) == 0
    out = capsys.readouterr().out
    for stage in ("prepare_data", "finetune_llm", "infer_base", "eval_base", "infer_tuned", "eval_tuned", "report"):
        assert f"{stage}" in out
    run = tmp_path / "run"
    assert (run / "config.yaml").exists()
    assert (run / "finetune_llm" / "model" / "adapter" / "adapter_config.json").exists()
    summary = json.loads((run / "eval_tuned" / "result" / "summary.json").read_text())
    assert summary["n_items"] == 4 and set(summary["metrics"]) >= {"exact", "cosine", "origin"}
    assert "| base" in (run / "report" / "report.md").read_text()
    assert (run / "finetune_llm" / "log.txt").read_text()

    assert main(["run", str(cfg)]) == 0
    second = capsys.readouterr().out
    assert second.count("skipped") == 7 and " ran " not in second

    assert main(["run", str(cfg), "--force", "report"]) == 0
    third = capsys.readouterr().out
    assert "report             ran" in third and third.count("skipped") == 6


def test_unknown_yaml_key_names_section_and_choices(tmp_path, squad_files, tiny_llm_dir, tiny_embedder_dir):
    cfg = write_config(tmp_path / "run.yaml", squad_files, tiny_llm_dir, tiny_embedder_dir, tmp_path / "r")
    data = yaml.safe_load(cfg.read_text())
    data["llm"]["finetune"]["lora_rnak"] = 4
    cfg.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="lora_rnak.*lora_rank"):
        RunConfig.from_yaml(cfg)
    data["llm"]["finetune"].pop("lora_rnak")
    data["llm"]["deploi"] = "builtin"
    cfg.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"unknown key 'llm.deploi'.*did you mean 'deploy'"):
        RunConfig.from_yaml(cfg)


def test_killed_finetune_resumes_on_rerun(tmp_path, squad_files, tiny_llm_dir, tiny_embedder_dir):
    """Kill `ragtune run` for real after the first checkpoint; the re-run continues from it."""
    cfg = write_config(tmp_path / "run.yaml", squad_files, tiny_llm_dir, tiny_embedder_dir, tmp_path / "run",
                       save_steps=1, max_samples=10, per_device_train_batch_size=1)
    ckpts = tmp_path / "run" / "finetune_llm" / "model" / "checkpoints"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ragtune.cli", "run", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpts.exists() and len(list(ckpts.glob("step-*"))) >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpts.exists(), "the run never reached a checkpoint"
    done_before = {p.name for p in ckpts.glob("step-*")}
    assert not (tmp_path / "run" / "finetune_llm" / ".stage.json").exists()

    out = subprocess.run([sys.executable, "-m", "ragtune.cli", "-v", "run", str(cfg)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    log = (tmp_path / "run" / "finetune_llm" / "log.txt").read_text()
    assert "resumed from" in log
    assert "prepare_data       skipped" in out.stdout
    last = max(int(name.split("-")[1]) for name in done_before)
    assert f"(step {last})" in log or f"(step {last + 1})" in log, log[-1500:]   # continued, not restarted
    assert "step-10" in {p.name for p in ckpts.glob("step-*")}
