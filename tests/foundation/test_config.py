from typing import Literal

import click
import pytest
from click.testing import CliRunner

from ragtune.core.config import Config, config_options
from ragtune.core.errors import ConfigError


class TrainCfg(Config):
    learning_rate: float = 1e-4
    num_train_epochs: float = 1.0
    lora_target: list[str] = ["all"]
    method: Literal["lora", "freeze", "full"] = "lora"
    bf16: bool | None = None


def test_unknown_key_names_key_suggestion_and_choices():
    with pytest.raises(ConfigError) as exc:
        TrainCfg.build(learning_rat=1e-3)
    msg = str(exc.value)
    assert "unknown key 'learning_rat'" in msg
    assert "did you mean 'learning_rate'" in msg
    assert "Valid keys: bf16, learning_rate, lora_target, method, num_train_epochs" in msg


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"invalid value for 'learning_rate'.*'fast'"):
        TrainCfg.build(learning_rate="fast")
    with pytest.raises(ConfigError, match=r"'method'.*'qlora'"):
        TrainCfg.build(method="qlora")


def test_yaml_with_overrides_and_unknown_key(tmp_path):
    good = tmp_path / "ok.yaml"
    good.write_text("learning_rate: 2e-4\nmethod: freeze\n")
    cfg = TrainCfg.from_yaml(good, num_train_epochs=3)
    assert (cfg.learning_rate, cfg.method, cfg.num_train_epochs) == (2e-4, "freeze", 3.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("lerning_rate: 1\n")
    with pytest.raises(ConfigError, match=rf"unknown key 'lerning_rate' in {bad}"):
        TrainCfg.from_yaml(bad)
    with pytest.raises(ConfigError, match="must hold a mapping"):
        (tmp_path / "list.yaml").write_text("- 1\n")
        TrainCfg.from_yaml(tmp_path / "list.yaml")


def test_saved_yaml_round_trips(tmp_path):
    cfg = TrainCfg.build(learning_rate=3e-5, lora_target=["q_proj", "v_proj"])
    cfg.save(tmp_path / "config.yaml")
    assert TrainCfg.from_yaml(tmp_path / "config.yaml") == cfg


def test_assignment_is_validated():
    cfg = TrainCfg()
    with pytest.raises(Exception):
        cfg.learning_rate = "nope"


def test_cli_flags_come_from_the_same_config():
    @click.command()
    @config_options(TrainCfg)
    def cmd(**values):
        cfg = TrainCfg.from_sources(None, **values)
        click.echo(f"{cfg.learning_rate} {cfg.method} {cfg.lora_target} {cfg.bf16}")

    runner = CliRunner()
    out = runner.invoke(cmd, ["--learning-rate", "5e-5", "--method", "full", "--lora-target", "q_proj,v_proj", "--bf16"])
    assert out.exit_code == 0, out.output
    assert out.output.strip() == "5e-05 full ['q_proj', 'v_proj'] True"
    bad = runner.invoke(cmd, ["--method", "qlora"])
    assert bad.exit_code != 0 and "qlora" in bad.output


class Inner(Config):
    learning_rate: float = 1e-4


class Outer(Config):
    name: str = "x"
    llm: Inner | None = None
    baselines: list[Inner] = []


def test_nested_unknown_key_names_section_and_its_valid_keys():
    with pytest.raises(ConfigError) as exc:
        Outer.build(llm={"learning_rat": 1})
    assert "unknown key 'llm.learning_rat'" in str(exc.value)
    assert "did you mean 'learning_rate'" in str(exc.value) and "Valid keys: learning_rate" in str(exc.value)
    with pytest.raises(ConfigError, match=r"unknown key 'baselines\[1\]\.lr'"):
        Outer.build(baselines=[{}, {"lr": 1}])


def test_registry_first_lookups_from_threads_see_every_builtin():
    """Two threads that look up a fresh registry at once both see all built-ins (the loader used to
    be cleared before it had filled the registry)."""
    import threading
    import time

    from ragtune.core.registry import Registry

    def slow_builtins():
        time.sleep(0.2)
        reg.register("a", 1)
        reg.register("b", 2)

    reg: Registry[int] = Registry("thing", builtins=slow_builtins)
    seen: list[list[str]] = []
    threads = [threading.Thread(target=lambda: seen.append(reg.names())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [["a", "b"]] * 4
