"""LLaMA-Factory backend: the generated dataset_info.json / YAML, and loud failures (real subprocesses)."""
from __future__ import annotations

import json
import stat

import pytest
import yaml

from ragtune.core.errors import BackendError, ConfigError
from ragtune.finetune.llamafactory import LlamaFactoryConfig, train, write_job_files


def _cfg(tmp_path, train_file, **kw):
    return LlamaFactoryConfig.build(base="/models/base", train=str(train_file),
                                    output=str(tmp_path / "out"), **kw)


def test_alpaca_files(tmp_path):
    data = tmp_path / "a.json"
    data.write_text(json.dumps([{"instruction": "q", "input": "", "output": "a"}]))
    cfg = _cfg(tmp_path, data, learning_rate=2e-4, cutoff_len=512, val_size=0.1, lora_rank=4,
               lora_target="q_proj,v_proj", prompt={"system": "Be brief."}, lf_template="qwen", extra_args={"flash_attn": "disabled"})
    files = write_job_files(cfg, "/models/base", bf16=True)
    info = json.loads(files["dataset_info"].read_text())["ragtune_train"]
    assert info["formatting"] == "alpaca" and info["file_name"] == str(data.resolve())
    assert info["columns"]["prompt"] == "instruction" and info["columns"]["response"] == "output"
    args = yaml.safe_load(files["train"].read_text())
    assert args["finetuning_type"] == "lora" and args["lora_target"] == "q_proj,v_proj"
    assert (args["lora_rank"], args["learning_rate"], args["cutoff_len"], args["val_size"]) == (4, 2e-4, 512, 0.1)
    assert args["template"] == "qwen" and args["default_system"] == "Be brief." and args["bf16"] is True
    assert args["dataset_dir"] == str(files["dataset_info"].parent.resolve())
    assert "max_samples" not in args                     # never a silent default truncation
    assert args["flash_attn"] == "disabled"
    assert args["output_dir"].endswith("out/adapter")
    export = yaml.safe_load(files["export"].read_text())
    assert export["adapter_name_or_path"] == args["output_dir"] and export["export_dir"].endswith("out/merged")
    with pytest.raises(ConfigError, match="LLaMA-Factory holds out single records"):   # not silently ignored
        write_job_files(_cfg(tmp_path, data, val_size=0.1, val_split="prompt_group"), "/models/base", bf16=True)


def test_messages_files_and_freeze(tmp_path):
    data = tmp_path / "m.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "a"}]}) + "\n")
    cfg = _cfg(tmp_path, data, finetuning_type="freeze", freeze_trainable_layers=3, max_samples=100)
    files = write_job_files(cfg, "/models/base", bf16=False)
    info = json.loads(files["dataset_info"].read_text())["ragtune_train"]
    assert info["formatting"] == "sharegpt" and info["tags"]["role_tag"] == "role"
    args = yaml.safe_load(files["train"].read_text())
    assert args["finetuning_type"] == "freeze" and args["freeze_trainable_layers"] == 3
    assert args["max_samples"] == 100 and "lora_rank" not in args and "export" not in files


def test_bad_inputs(tmp_path):
    data = tmp_path / "bad.json"
    data.write_text(json.dumps([{"instruction": "q"}]))
    with pytest.raises(Exception, match="record 0, field 'output'"):
        write_job_files(_cfg(tmp_path, data), "/m", bf16=False)
    with pytest.raises(ConfigError, match="unknown key 'lora_rnk'"):
        LlamaFactoryConfig.build(lora_rnk=3)
    good = tmp_path / "g.json"
    good.write_text(json.dumps([{"instruction": "q", "output": "a"}]))
    with pytest.raises(ConfigError, match="extra_args .*learning_rate"):
        write_job_files(_cfg(tmp_path, good, extra_args={"learning_rate": 1}), "/m", bf16=False)


def test_failing_cli_raises_with_log_tail(tmp_path, tiny_llm_dir):
    """A real process that fails: exit code and the last lines reach the user (no tee swallowing)."""
    fake = tmp_path / "llamafactory-cli"
    fake.write_text("#!/bin/sh\necho loading model\necho 'RuntimeError: boom in step 3'\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    data = tmp_path / "g.json"
    data.write_text(json.dumps([{"instruction": "q", "output": "a"}]))
    cfg = LlamaFactoryConfig.build(base=str(tiny_llm_dir), train=str(data), output=str(tmp_path / "o"),
                                   llamafactory_cli=str(fake))
    with pytest.raises(BackendError, match=r"(?s)train failed with exit code 3.*boom in step 3"):
        train(cfg)
    assert "boom in step 3" in (tmp_path / "o/train.log").read_text()
    assert (tmp_path / "o/llamafactory/train.yaml").exists()


def test_missing_cli(tmp_path, tiny_llm_dir):
    data = tmp_path / "g.json"
    data.write_text(json.dumps([{"instruction": "q", "output": "a"}]))
    cfg = LlamaFactoryConfig.build(base=str(tiny_llm_dir), train=str(data), output=str(tmp_path / "o"),
                                   llamafactory_cli="no-such-llamafactory-cli")
    with pytest.raises(BackendError, match="not installed"):
        train(cfg)
