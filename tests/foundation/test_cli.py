import subprocess
import sys

from ragtune.cli import COMMANDS, main


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ragtune.cli", *args], capture_output=True, text=True, env=env)


def test_help_lists_every_group():
    out = run("--help")
    assert out.returncode == 0
    for group in ("models", "data", "finetune", "serve", "infer", "eval", "run", "demo"):
        assert group in out.stdout
    assert set(COMMANDS) >= {"models", "data", "finetune", "serve", "infer", "eval", "run", "demo"}


def test_help_does_not_import_torch():
    code = "import ragtune, ragtune.cli; ragtune.cli.main(['--help']); import sys; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "False False"


def test_group_help_does_not_import_torch():
    for group in COMMANDS:
        code = (f"import sys, ragtune.cli\ntry:\n    ragtune.cli.main(['{group}', '--help'])\n"
                f"except SystemExit:\n    pass\nprint('TORCH', 'torch' in sys.modules)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert "TORCH False" in out.stdout, (group, out.stdout[-500:], out.stderr[-500:])


def test_unknown_command_fails():
    out = run("no-such-group")
    assert out.returncode != 0


def test_library_errors_become_messages_with_hint(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["models", "pull", "no-such/model"])
    err = capsys.readouterr().err
    assert code == 1
    assert "no-such/model" in err
    assert "gemma-3-270m" in err and "all-MiniLM-L6-v2" in err   # names the offline alternatives
    assert "Traceback" not in err


def test_verbose_and_quiet_work_after_the_subcommand(tmp_path, capsys):
    """Issue 19d: -v / -q are accepted after the subcommand too; a subcommand's own --quiet stays its own."""
    import json
    import logging

    from click.testing import CliRunner

    from ragtune.cli import cli, hoist_global_flags

    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"instruction": "q", "output": "a"}]))
    logger = logging.getLogger("ragtune")
    assert main(["data", "validate", str(data), "-v"]) == 0
    assert logger.level == logging.DEBUG
    assert main(["data", "validate", "--quiet", str(data)]) == 0
    assert logger.level == logging.WARNING
    assert main(["data", "validate", str(data)]) == 0
    assert logger.level == logging.INFO
    result = CliRunner().invoke(cli, ["models", "list", "--verbose", "--json"])
    assert result.exit_code == 0, result.output
    ctx = cli.make_context("ragtune", ["--help"], resilient_parsing=True)
    assert hoist_global_flags(cli, ctx, ["infer", "--quiet", "-v", "x"]) == ["-v", "infer", "--quiet", "x"]
    assert hoist_global_flags(cli, ctx, ["run", "c.yaml", "--", "-v"]) == ["run", "c.yaml", "--", "-v"]


def test_generated_help_types_numbers_and_shows_no_bogus_default():
    """Issue 19d: options generated from config fields show INTEGER / FLOAT, and a required field shows
    no default (never PydanticUndefined)."""
    import click
    from click.testing import CliRunner
    from pydantic import Field

    from ragtune.core.config import Config, config_options

    class Toy(Config):
        steps: int = Field(description="Steps.")
        lr: float = Field(1e-4, description="Learning rate.")
        budget: float | None = Field(None, description="Minutes.")
        name: str = Field(description="A name.")

    @click.command()
    @config_options(Toy)
    def cmd(**values):
        click.echo(repr(Toy.build(**{k: v for k, v in values.items() if v is not None})))

    help_text = CliRunner().invoke(cmd, ["--help"]).output
    assert "--steps INTEGER" in help_text and "--lr FLOAT" in help_text and "--budget FLOAT" in help_text
    assert "--name TEXT" in help_text
    assert "PydanticUndefined" not in help_text and "[default: 0.0001]" in help_text
    ok = CliRunner().invoke(cmd, ["--steps", "3", "--name", "n"])
    assert ok.exit_code == 0 and "steps=3" in ok.output
    for group, sub in (("finetune", "llm"), ("finetune", "embed"), ("data", "synth"), ("eval", "llm")):
        out = run(group, sub, "--help")
        assert out.returncode == 0 and "PydanticUndefined" not in out.stdout, (group, sub)
    assert "--learning-rate FLOAT" in run("finetune", "llm", "--help").stdout


def test_normal_runs_print_no_warning_and_library_noise_is_quieted_at_cli_start_only(tmp_path, tiny_llm_dir):
    """Issue 19f: a normal data command on a tiny model's tokenizer shows progress, no WARNING line;
    the third-party quieting happens when the CLI starts, not when ragtune is imported."""
    import json
    import os

    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"instruction": f"q{i}", "output": "a"} for i in range(3)]))
    env = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_VERBOSITY", "HF_HUB_VERBOSITY")}
    out = run("data", "validate", str(data), "--cutoff-len", "64", "--tokenizer", str(tiny_llm_dir), env=env)
    assert out.returncode == 0, out.stderr
    assert "WARNING" not in out.stderr and "FutureWarning" not in out.stderr, out.stderr
    code = ("import os, warnings, ragtune, ragtune.cli\n"
            "print(os.environ.get('TRANSFORMERS_VERBOSITY'), len(warnings.filters))\n"
            "ragtune.cli.quiet_third_party()\n"
            "print(os.environ.get('TRANSFORMERS_VERBOSITY'))\n"
            "warnings.warn_explicit('x', FutureWarning, 'f.py', 1, module='transformers.utils')\n")
    probe = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, env=env)
    lines = probe.stdout.split()
    assert lines[0] == "None" and lines[2] == "error", probe.stdout
    assert "FutureWarning" not in probe.stderr, probe.stderr


def test_model_loads_show_ragtunes_progress_not_transformers_per_load_bars(tmp_path, tiny_llm_dir):
    """The walkthrough: "Loading weights" bars of every model load interleaved with the infer bar."""
    import json
    import os

    evalset = tmp_path / "e.json"
    evalset.write_text(json.dumps([{"instruction": f"q{i}", "output": "a"} for i in range(2)]))
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    out = run("infer", "--model", str(tiny_llm_dir), "--evalset", str(evalset), "--output", str(tmp_path / "p.json"),
              "--max-tokens", "2", "--dtype", "fp32", env=env)
    assert out.returncode == 0, out.stderr
    assert "Loading weights" not in out.stderr and "infer: 100%" in out.stderr, out.stderr


def test_a_missing_required_setting_names_its_flag(tmp_path):
    """The walkthrough: `eval llm` without --evalset said "invalid value for 'evalset': {...}: Field required"."""
    preds = tmp_path / "p.json"
    preds.write_text('[{"index": 0, "prediction": "a"}]')
    out = run("eval", "llm", "--predictions", str(preds), "--metrics", "exact", "--output", str(tmp_path / "x"))
    assert out.returncode == 1
    assert "missing required setting 'evalset'" in out.stderr and "give --evalset" in out.stderr, out.stderr
    assert "Field required" not in out.stderr and "{...}" not in out.stderr
