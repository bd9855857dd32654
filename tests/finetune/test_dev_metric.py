"""The task metric during training: decoded through the serving engine on held-out records, logged to
metrics.json and progress.jsonl, plotted; the best eval's weights are the saved model; early stopping
and the time budget stop the run in time."""
from __future__ import annotations

import json

import pytest

from .conftest import span_items, write_json


@pytest.fixture
def span_file(tmp_path):
    return write_json(tmp_path / "train.json", span_items(60, seed=3))


def _dev(out):
    return [h for h in json.loads((out / "metrics.json").read_text())["history"] if "dev" in h]


def test_dev_metric_rises_and_is_logged_everywhere(tiny_llm_dir, span_file, tmp_path):
    import ragtune as rt

    out = tmp_path / "out"
    train = write_json(tmp_path / "big.json", span_items(600, seed=1))
    res = rt.finetune.full.run(str(tiny_llm_dir), str(train), str(out), learning_rate=3e-3, num_train_epochs=4,
                               per_device_train_batch_size=8, val_size=40, eval_steps=70, dtype="fp32",
                               lr_scheduler_type="constant", dev_metrics=["exact", "cmrc_f1"], dev_max_tokens=3,
                               pack_shared_prefix=False)
    devs = _dev(out)
    assert len(devs) >= 3 and set(devs[0]["dev"]) == {"exact", "cmrc_f1"}
    assert devs[-1]["dev"]["exact"] >= 0.5 > devs[0]["dev"]["exact"]    # the task metric, not only the loss
    progress = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    assert [p["dev"] for p in progress if "dev" in p] == [d["dev"] for d in devs]
    assert res.metrics["best"]["step"] in [d["step"] for d in devs]
    assert res.metrics["best"]["exact"] == max(d["dev"]["exact"] for d in devs)
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_keep_best_saves_the_best_evals_weights(tiny_llm_dir, span_file, tmp_path):
    """A learning rate that wrecks the model after it learned: the saved model is the best step's."""
    import torch
    from safetensors.torch import load_file

    import ragtune as rt

    out = tmp_path / "out"
    res = rt.finetune.full.run(str(tiny_llm_dir), str(span_file), str(out), learning_rate=3e-3, num_train_epochs=3,
                               per_device_train_batch_size=4, val_size=12, eval_steps=5, dtype="fp32",
                               dev_metrics=["exact"], dev_max_tokens=4, pack_shared_prefix=False, merge=True)
    best = res.metrics["best"]
    best_weights = load_file(str(out / "best" / "trainable.safetensors"))
    merged = load_file(str(out / "merged" / "model.safetensors"))
    name = next(n for n in best_weights if "layers.0.mlp.down_proj" in n)
    key = next(k for k in merged if k.endswith("layers.0.mlp.down_proj.weight"))
    torch.testing.assert_close(merged[key].float(), best_weights[name].float())
    assert best["step"] <= res.metrics["steps"]


def test_early_stopping_and_bad_dev_settings(tiny_llm_dir, span_file, tmp_path):
    import ragtune as rt
    from ragtune.core.errors import ConfigError

    res = rt.finetune.lora.run(str(tiny_llm_dir), str(span_file), str(tmp_path / "o"), learning_rate=1e-9,
                               num_train_epochs=20, per_device_train_batch_size=8, val_size=8, eval_steps=2,
                               dtype="fp32", dev_metrics=["exact"], dev_max_tokens=2, dev_extractive="span", early_stopping_patience=2,
                               pack_shared_prefix=False)
    assert res.metrics["stopped"].startswith("early stopping") and res.metrics["steps"] < 60
    with pytest.raises(ConfigError, match="dev_metrics need held-out records"):
        rt.finetune.lora.run(str(tiny_llm_dir), str(span_file), str(tmp_path / "p"), dev_metrics=["exact"])
    with pytest.raises(ConfigError, match="unknown metric 'exakt'"):
        rt.finetune.lora.config(dev_metrics=["exakt"])


def test_time_budget_plans_the_steps_and_ends_in_time(tiny_llm_dir, span_file, tmp_path):
    import ragtune as rt

    res = rt.finetune.lora.run(str(tiny_llm_dir), str(span_file), str(tmp_path / "o"), num_train_epochs=1000,
                               per_device_train_batch_size=2, dtype="fp32", time_budget="12s",
                               pack_shared_prefix=False, save_minutes=None)
    plan = res.metrics["time_budget"]
    assert plan["budget_s"] == 12 and plan["warmup_steps"] >= 3
    assert plan["planned_steps"] < 1000 * 30                        # planned from the speed, not the epochs
    assert plan["actual_train_s"] <= 12 + 5                         # within the budget (+ noise of one step)
    assert abs(res.metrics["steps"] - plan["planned_steps"]) <= max(3, 0.3 * plan["planned_steps"])
    # planned again at 10% and 25% of the budget from the steady rate (the warm-up's includes one-off costs)
    assert [p["at_step"] for p in plan["plans"]] == sorted(p["at_step"] for p in plan["plans"])
    assert len(plan["plans"]) == 3 and plan["plans"][-1]["at_s"] >= 0.25 * 12


@pytest.mark.parametrize("method, extra", [("full", {"train_embeddings": False}), ("freeze", {})])
def test_dev_metric_decodes_mixed_precision_weights(tiny_llm_dir, span_file, tmp_path, method, extra):
    """bf16: what trains keeps fp32 masters beside frozen bf16 weights; the dev decode runs under the
    training autocast (it used to fail with 'expected m1 and m2 to have the same dtype')."""
    import ragtune as rt

    res = getattr(rt.finetune, method).run(str(tiny_llm_dir), str(span_file), str(tmp_path / "o"), max_steps=2,
                                           per_device_train_batch_size=4, val_size=8, eval_steps=1, dtype="bf16",
                                           dev_metrics=["exact"], dev_max_tokens=2, pack_shared_prefix=False,
                                           **extra)
    devs = _dev(tmp_path / "o")
    assert [d["step"] for d in devs] == [1, 2] and res.metrics["best"]["step"] in (1, 2)
