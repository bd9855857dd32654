"""`ragtune run` on tiny models: the chain completes, a re-run skips every stage, bad YAML is clear."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from ragtune.cli import main
from ragtune.core.errors import ConfigError
from ragtune.data.manuals import generate_manuals, split_by_passage
from ragtune.workflow.run import RunConfig


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
                       save_steps=1, max_samples=10, per_device_train_batch_size=1, pack_shared_prefix=False)
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


# Every typo, at any nesting level, fails when the file is read: before any stage runs, naming the
# key path (or the section), the closest valid key and the valid keys. (path into the config, bad
# value, what the message must say)
TYPOS = [
    (("llm", "prompt"), {"sytem": "x"}, r"prompt.sytem.*did you mean 'system'.*drop_builtin_system"),
    (("llm", "infer"), {"max_tokenz": 3}, r"max_tokenz.*did you mean 'max_tokens'"),
    (("llm", "deploy_params"), {"bogus": 1}, r"unknown key 'bogus' in llm.deploy_params.*max_batch_size"),
    (("llm", "deploy_params"), {"max_batch_sise": 4}, r"max_batch_sise.*did you mean 'max_batch_size'"),
    (("llm", "deploy_params"), {"vllm_args": ["x"]}, r"'vllm_args' is a setting of engine vllm, not of engine 'builtin'"),
    (("llm", "deploy"), "vlm", r"unknown engine 'vlm'.*did you mean 'vllm'"),
    (("llm", "method"), "qlora", r"unknown fine-tune method 'qlora'"),
    (("llm", "finetune"), {"lora_rnak": 4}, r"lora_rnak.*did you mean 'lora_rank'"),
    (("llm", "finetune"), {"freeze_trainable_layers": 2}, r"'freeze_trainable_layers'.*does not apply to method 'lora'"),
    (("llm", "finetune"), {"prompt": {"system": "x"}}, r"llm.finetune.prompt: set it as llm.prompt"),
    (("llm", "finetune"), {"learning_rate": "fast"}, r"invalid value for 'learning_rate'"),
    (("eval",), {"metrics": ["exakt"]}, r"unknown metric 'exakt'.*did you mean 'exact'"),
    (("eval",), {"metrics": [{"name": "exact", "lenent": True}]}, r"lenent.*did you mean 'lenient'"),
    (("eval",), {"metricz": ["exact"]}, r"unknown key 'eval.metricz'.*did you mean 'metrics'"),
    (("eval",), {"origin_tokenizer": "spaces"}, r"origin_tokenizer"),
    (("data",), {"trian": "x.json"}, r"unknown key 'data.trian'.*did you mean 'train'"),
    (("launcher",), {"tyype": "torchrun"}, r"unknown key 'launcher.tyype'.*did you mean 'type'"),
    (("baselines",), [{"name": "x", "url": "http://h", "modle": "m"}], r"baselines\[0\].modle.*did you mean 'model'"),
]


@pytest.mark.parametrize("path, value, message", TYPOS, ids=["-".join(t[0]) + f"-{i}" for i, t in enumerate(TYPOS)])
def test_every_typo_fails_before_any_stage_runs(tmp_path, squad_files, tiny_llm_dir, tiny_embedder_dir, capsys,
                                                 path, value, message):
    cfg = write_config(tmp_path / "run.yaml", squad_files, tiny_llm_dir, tiny_embedder_dir, tmp_path / "r")
    data = yaml.safe_load(cfg.read_text())
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    if isinstance(value, dict) and isinstance(node.get(path[-1]), dict):
        node[path[-1]].update(value)
    else:
        node[path[-1]] = value
    cfg.write_text(yaml.safe_dump(data))
    assert main(["run", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "r").exists()          # nothing ran, nothing was written


def test_unresolvable_eval_embed_and_missing_data_fail_before_any_stage(tmp_path, squad_files, tiny_llm_dir,
                                                                         tiny_embedder_dir, capsys):
    cfg = write_config(tmp_path / "run.yaml", squad_files, tiny_llm_dir, tiny_embedder_dir, tmp_path / "r")
    data = yaml.safe_load(cfg.read_text())
    data["eval"]["embed"] = str(tmp_path / "no-such-embedder")
    cfg.write_text(yaml.safe_dump(data))
    assert main(["run", str(cfg)]) == 1
    assert "eval.embed (cosine)" in capsys.readouterr().err
    assert not (tmp_path / "r" / "prepare_data").exists()
    data["eval"]["embed"] = str(tiny_embedder_dir)
    data["data"]["train"] = str(tmp_path / "missing.json")
    cfg.write_text(yaml.safe_dump(data))
    assert main(["run", str(cfg)]) == 1
    assert "data.train" in capsys.readouterr().err and not (tmp_path / "r" / "prepare_data").exists()


def test_run_stages_are_the_typed_jobs(tmp_path, squad_files, tiny_llm_dir, tiny_embedder_dir):
    """One wiring: each stage is a job (what TrainableModule and the CLI build); its config.json is the
    job spec, and the prompt of the run reaches fine-tune and inference alike."""
    from ragtune.eval.report import CompareConfig
    from ragtune.eval.runner import LlmEvalConfig
    from ragtune.infer.runner import InferConfig
    from ragtune.workflow.jobs import FinetuneJob, PrepareDataJob
    from ragtune.workflow.run import build_stages

    cfg_file = write_config(tmp_path / "run.yaml", squad_files, tiny_llm_dir, tiny_embedder_dir, tmp_path / "r")
    data = yaml.safe_load(cfg_file.read_text())
    data["llm"]["prompt"] = {"system": "Answer briefly."}
    stages = build_stages(RunConfig.build(None, **data))
    kinds = {s.name: type(s.job) for s in stages}
    assert kinds == {"prepare_data": PrepareDataJob, "finetune_llm": FinetuneJob, "infer_base": InferConfig,
                     "eval_base": LlmEvalConfig, "infer_tuned": InferConfig, "eval_tuned": LlmEvalConfig,
                     "report": CompareConfig}
    by_name = {s.name: s.job for s in stages}
    assert by_name["finetune_llm"].config.prompt.system == "Answer briefly."
    assert by_name["infer_tuned"].prompt.system == "Answer briefly."
    assert by_name["finetune_llm"].config.lora_rank == 8 and by_name["finetune_llm"].config.method == "lora"
    assert by_name["infer_base"].max_tokens == 4


def test_sweep_validates_every_point_runs_the_grid_and_ranks(tmp_path, squad_files, tiny_llm_dir, tiny_embedder_dir,
                                                             capsys):
    cfg = write_config(tmp_path / "run.yaml", squad_files, tiny_llm_dir, tiny_embedder_dir, tmp_path / "unused")
    run = yaml.safe_load(cfg.read_text())
    run["llm"]["finetune"].update(val_size=3, dev_metrics=["exact", "cmrc_f1"], dev_max_tokens=4, max_samples=None)
    run["llm"]["evaluate_base"] = False
    sweep = {"run": run, "grid": {"llm.finetune.learning_rate": [1e-3, 5e-3], "llm.finetune.lora_rank": [4]},
             "rank_by": "dev.cmrc_f1", "output": str(tmp_path / "sweep")}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    assert main(["sweep", str(path), "--list"]) == 0
    assert capsys.readouterr().out.count("->") == 2
    bad = dict(sweep, grid={"llm.finetune.lora_rnak": [4]})
    path.write_text(yaml.safe_dump(bad))
    assert main(["sweep", str(path)]) == 1
    assert "sweep point lora_rnak=4" in capsys.readouterr().err and not (tmp_path / "sweep").exists()
    path.write_text(yaml.safe_dump(sweep))
    assert main(["sweep", str(path)]) == 0
    report = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    values = [r["rank_value"] for r in report["runs"]]
    assert len(values) == 2 and values == sorted(values, reverse=True)
    assert all(r["train_minutes"] >= 0 and "exact" in r["eval"] for r in report["runs"])
    assert (tmp_path / "sweep" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["sweep", str(path)]) == 0                   # again: every stage of every run is skipped
    assert capsys.readouterr().err.count("running ->") == 0


def test_sweep_recipes_set_several_keys_per_point_crossed_with_the_grid(tmp_path, squad_files, tiny_llm_dir,
                                                                       tiny_embedder_dir):
    from ragtune.core.errors import ConfigError
    from ragtune.workflow.sweep import SweepConfig

    cfg = write_config(tmp_path / "run.yaml", squad_files, tiny_llm_dir, tiny_embedder_dir, tmp_path / "unused")
    run = yaml.safe_load(cfg.read_text())
    recipes = {"lora-r8": {"llm.finetune.lora_rank": 8, "llm.finetune.lora_alpha": 16},
               "full": {"llm.method": "full", "llm.finetune.learning_rate": 1e-4}}
    sweep = SweepConfig.build("sweep", run=run, recipes=recipes, grid={"llm.finetune.num_train_epochs": [1, 2]},
                              output=str(tmp_path / "s"))
    points = dict(sweep.points())
    assert sorted(points) == ["full,num_train_epochs=1", "full,num_train_epochs=2",
                              "lora-r8,num_train_epochs=1", "lora-r8,num_train_epochs=2"]
    lora, full = points["lora-r8,num_train_epochs=2"].llm, points["full,num_train_epochs=1"].llm
    assert (lora.method, lora.finetune["lora_rank"], lora.finetune["lora_alpha"], lora.finetune["num_train_epochs"]) == (
        "lora", 8, 16, 2)
    assert (full.method, full.finetune["learning_rate"], full.finetune["num_train_epochs"]) == ("full", 1e-4, 1)
    assert points["full,num_train_epochs=2"].run_dir == str(tmp_path / "s" / "full,num_train_epochs=2")
    only = SweepConfig.build("sweep", run=run, recipes=recipes, output=str(tmp_path / "s"))
    assert sorted(name for name, _ in only.points()) == ["full", "lora-r8"]
    for bad, words in [({"recipes": {}, "grid": {}}, "needs a grid"),
                       ({"recipes": recipes, "grid": {"llm.method": ["lora"]}}, "llm.method: set by both"),
                       ({"recipes": {"x": {"llm.finetune.lora_rnak": 4}}}, "sweep point x")]:
        with pytest.raises(ConfigError, match=words):
            SweepConfig.build("sweep", run=run, output=str(tmp_path / "s"), **bad).points()


def test_eval_items_are_asked_with_the_training_template(tmp_path, squad_files, tiny_llm_dir, tiny_embedder_dir):
    """data.template_lang zh trains on the Chinese template: inference must use it too."""
    from ragtune.data.squad import TEMPLATES
    from ragtune.workflow.run import build_stages

    cfg = write_config(tmp_path / "run.yaml", squad_files, tiny_llm_dir, tiny_embedder_dir, tmp_path / "r")
    data = yaml.safe_load(cfg.read_text())
    data["data"]["template_lang"] = "zh"
    stages = {s.name: s.job for s in build_stages(RunConfig.build(None, **data))}
    assert stages["infer_tuned"].template == TEMPLATES["zh"] == stages["infer_base"].template
    assert stages["prepare_data"].template_lang == "zh"


def test_template_values_with_braces_are_inserted_verbatim():
    from ragtune.infer.runner import item_input

    kind, msgs = item_input({"context": "f(x) = {x: 1} {question}", "question": "q?"},
                            "C: {context}\nQ: {question}")
    assert msgs[0]["content"] == "C: f(x) = {x: 1} {question}\nQ: q?"


def test_example_config_on_a_fresh_checkout_names_the_missing_file_and_the_command_that_makes_it(tmp_path):
    """Issue 19b: examples/manuals_gemma.yaml before its data exists: a preflight error naming the key
    path, the file and the command the YAML's comment gives, no traceback; that command then makes
    the data and the preflight passes."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "manuals_gemma.yaml"
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "manuals_gemma.yaml").write_text(example.read_text(encoding="utf-8"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "ragtune.cli", "run", "examples/manuals_gemma.yaml"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "data.train: ragtune-demo/data/train_squad.json does not exist" in out.stderr
    assert "`ragtune data manuals ragtune-demo/data`" in out.stderr
    assert not (tmp_path / "runs").exists()                      # nothing ran
    made = subprocess.run([sys.executable, "-m", "ragtune.cli", "data", "manuals", "ragtune-demo/data",
                           "--machines", "6"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert made.returncode == 0, made.stderr
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        cfg = RunConfig.from_yaml("examples/manuals_gemma.yaml")
        from ragtune.workflow.run import build_stages, check_stage_inputs

        check_stage_inputs(cfg, build_stages(cfg))                # the data the comment promised is there
        rows = json.loads(Path("ragtune-demo/data/train_squad.json").read_text(encoding="utf-8"))
        assert rows and {"context", "question", "answers"} <= set(rows[0])
    finally:
        os.chdir(cwd)


def test_missing_input_of_any_stage_names_its_key_path(tmp_path, squad_files, tiny_llm_dir, tiny_embedder_dir):
    cfg_path = write_config(tmp_path / "c.yaml", squad_files, tiny_llm_dir, tiny_embedder_dir, tmp_path / "run")
    raw = yaml.safe_load(cfg_path.read_text())
    raw["data"]["eval"] = str(tmp_path / "nowhere" / "eval.json")
    cfg_path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"data\.eval: .*nowhere/eval\.json does not exist \(input of stage "
                                          r"'prepare_data'\)") as exc:
        main_cfg = RunConfig.from_yaml(cfg_path)
        main_cfg.preflight()
    assert exc.value.hint and "create it first" in exc.value.hint
    assert not (tmp_path / "run").exists()


def test_prepare_data_reports_what_it_rejected(tmp_path, squad_files, caplog):
    """A CMRC eval row with an empty question cannot be scored: prepare_data leaves it out and says so
    (the stage log and summary.json), the record's id named; nothing is dropped silently."""
    import logging

    from ragtune.workflow.jobs import PrepareDataJob

    rows = json.loads((squad_files / "test.json").read_text())
    rows[1] = {**rows[1], "id": "TRIAL_20_QUERY_0", "question": " "}
    (tmp_path / "test.json").write_text(json.dumps(rows))
    job = PrepareDataJob(train=str(squad_files / "train.json"), eval=str(tmp_path / "test.json"),
                         output=str(tmp_path / "prep"))
    with caplog.at_level(logging.INFO, logger="ragtune"):
        info = job.execute()
    assert info["eval_items"] == len(rows) - 1
    written = json.loads((tmp_path / "prep" / "summary.json").read_text())
    assert [s["rejected"] for s in written["summaries"]] == [{}, {"empty question or context": 1}]
    assert "rejected (empty question or context): 1  e.g. record 1 (id TRIAL_20_QUERY_0)" in caplog.text
