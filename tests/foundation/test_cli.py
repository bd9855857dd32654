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
