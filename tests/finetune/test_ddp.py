"""DDP for real: 2 processes under torchrun (gloo on CPU) == 1 process with the same global batch."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from .conftest import span_items, write_json  # noqa: E402


def test_ddp_two_processes_match_single_process(tiny_llm_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import ragtune as rt
    from ragtune.workflow.launching import launch_finetune

    if shutil.which("torchrun") is None:
        monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + ":" + __import__("os").environ["PATH"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    train = write_json(tmp_path / "t.json", span_items(16, seed=5))
    common = dict(base=str(tiny_llm_dir), train=str(train), learning_rate=5e-3, num_train_epochs=1,
                  per_device_train_batch_size=2, dtype="fp32", merge=False, lora_rank=4, val_size=4,
                  per_device_eval_batch_size=1)
    # 1 process: micro-batch 2 x accumulation 2 = global batch 4
    single = rt.finetune.lora(output=str(tmp_path / "single"), gradient_accumulation_steps=2, **common)
    res = single.run()
    # 2 processes: micro-batch 2 x 2 ranks = global batch 4
    ddp = rt.finetune.lora(output=str(tmp_path / "ddp"), **common)
    launch_finetune(rt.finetune.lora, ddp.cfg, {"type": "torchrun", "nproc_per_node": 2}, tmp_path / "launch")

    log = (tmp_path / "ddp/train.log").read_text()
    assert "world size 2" in log
    metrics = __import__("json").loads((tmp_path / "ddp/metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == res.metrics["steps"] == 3
    assert metrics["eval_loss"] == pytest.approx(res.metrics["eval_loss"], rel=1e-5)
    a = load_file(str(tmp_path / "single/adapter/adapter_model.safetensors"))
    b = load_file(str(tmp_path / "ddp/adapter/adapter_model.safetensors"))
    assert a.keys() == b.keys()
    moved = 0
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6, msg=k)
        moved += int(a[k].abs().sum() > 0)
    assert moved == len(a)  # lora_B starts at zero; every tensor trained
