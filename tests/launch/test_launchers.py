import os
import shlex
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from ragtune.core.errors import BackendError
from ragtune.launch import LauncherConfig, job_state, run_logged, sbatch_script, submit, torchrun_command, wait_for_job

ARGS = ["finetune", "llm", "--config", "/runs/x/finetune.yaml"]


def test_torchrun_single_node_command_exact():
    cmd = torchrun_command(ARGS, LauncherConfig(type="torchrun", nproc_per_node=4))
    assert cmd == ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=4",
                   "-m", "ragtune.cli", "finetune", "llm", "--config", "/runs/x/finetune.yaml"]


def test_torchrun_multi_node_command_exact():
    cfg = LauncherConfig(type="torchrun", nnodes=2, nproc_per_node=8, extra_args=["--max_restarts=1"])
    cmd = torchrun_command(ARGS, cfg, rdzv_endpoint="node0:29500", rdzv_id="job7")
    assert cmd == ["torchrun", "--nnodes=2", "--nproc_per_node=8", "--rdzv_backend=c10d",
                   "--rdzv_endpoint=node0:29500", "--rdzv_id=job7", "--max_restarts=1",
                   "-m", "ragtune.cli", "finetune", "llm", "--config", "/runs/x/finetune.yaml"]
    with pytest.raises(BackendError, match="rendezvous"):
        torchrun_command(ARGS, LauncherConfig(type="torchrun", nnodes=2))


def test_sbatch_script_exact():
    cfg = LauncherConfig(type="slurm", nnodes=2, nproc_per_node=8, partition="a100", time="04:00:00",
                         extra_args=["--exclusive"])
    script = sbatch_script(ARGS, cfg, job_name="ragtune-x", log_path="/runs/x/launcher.log", workdir="/work dir")
    assert script == textwrap.dedent("""\
        #!/bin/bash
        #SBATCH --job-name=ragtune-x
        #SBATCH --nodes=2
        #SBATCH --ntasks-per-node=1
        #SBATCH --gpus-per-node=8
        #SBATCH --output=/runs/x/launcher.log
        #SBATCH --partition=a100
        #SBATCH --time=04:00:00
        #SBATCH --exclusive
        set -euo pipefail
        cd '/work dir'
        head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
        srun torchrun --nnodes="$SLURM_NNODES" --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint="$head_node":29500 --rdzv_id="$SLURM_JOB_ID" -m ragtune.cli finetune llm --config /runs/x/finetune.yaml
        """)


def _fake_bin(tmp_path: Path, name: str, body: str) -> None:
    path = tmp_path / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """Real executables named sbatch/sacct on PATH: they exercise our process handling for real."""
    state = tmp_path / "state"
    _fake_bin(tmp_path, "sbatch", f'echo "$@" > "{tmp_path}/submitted"; echo "4242;cluster"\n')
    _fake_bin(tmp_path, "sacct", f'n=$(cat {state}.n 2>/dev/null || echo 0); echo $((n+1)) > {state}.n\n'
                                 f'sed -n "$((n+1))p" {state} | grep . || tail -n 1 {state}\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return state


def test_slurm_submit_and_track_to_completion(tmp_path, fake_slurm):
    fake_slurm.write_text("PENDING\nRUNNING\nCOMPLETED\n")
    script = tmp_path / "job.sbatch"
    script.write_text("#!/bin/bash\n")
    assert submit(script) == "4242"
    assert (tmp_path / "submitted").read_text().split() == ["--parsable", str(script)]
    wait_for_job("4242", tmp_path / "launcher.log", poll_seconds=0.01)
    assert (tmp_path / "state.n").read_text().strip() == "3"


def test_slurm_failure_surfaces_state_and_log_tail(tmp_path, fake_slurm):
    fake_slurm.write_text("RUNNING\nOUT_OF_MEMORY\n")
    (tmp_path / "launcher.log").write_text("step 1\nCUDA out of memory. Tried to allocate 2 GiB\n")
    with pytest.raises(BackendError) as exc:
        wait_for_job("4242", tmp_path / "launcher.log", poll_seconds=0.01)
    assert "OUT_OF_MEMORY" in str(exc.value) and "CUDA out of memory" in str(exc.value)
    assert job_state("4242") == "OUT_OF_MEMORY"


def test_failed_subprocess_raises_with_exit_code_and_tail(tmp_path):
    cmd = [sys.executable, "-c", "import sys; print('loading'); print('boom: bad shard', file=sys.stderr); sys.exit(3)"]
    with pytest.raises(BackendError) as exc:
        run_logged(cmd, tmp_path / "job.log")
    assert "code 3" in str(exc.value) and "boom: bad shard" in str(exc.value)
    run_logged([sys.executable, "-c", "print('ok')"], tmp_path / "ok.log")
    assert "ok" in (tmp_path / "ok.log").read_text()


def test_torchrun_launcher_runs_a_real_finetune(tmp_path, tiny_llm_dir):
    """The torchrun path for real (1 process on CPU): config YAML -> `torchrun -m ragtune.cli finetune llm`."""
    import json

    from ragtune import finetune as ft
    from ragtune.workflow.launching import launch_finetune

    train = tmp_path / "train.json"
    train.write_text(json.dumps([{"instruction": f"say {w}", "output": w} for w in ("pump", "valve", "north")]))
    cfg = ft.lora.config(base=str(tiny_llm_dir), train=str(train), output=str(tmp_path / "out"),
                         max_steps=2, cutoff_len=64)
    launch_finetune(ft.lora, cfg, {"type": "torchrun", "nproc_per_node": 1}, tmp_path)
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "finetune.yaml").exists() and (tmp_path / "launcher.log").exists()
    bad = ft.lora.config(base=str(tiny_llm_dir), train=str(tmp_path / "missing.json"),
                         output=str(tmp_path / "out2"))
    with pytest.raises(BackendError, match="exited with code"):
        launch_finetune(ft.lora, bad, {"type": "torchrun", "nproc_per_node": 1}, tmp_path / "w2")


# -- hostile values: nothing a user or an attacker puts in a path or a setting runs as shell -------------
SBATCH_PARSER = r"""
def sbatch_args(script):
    # sbatch's own #SBATCH parser (Slurm src/sbatch/opt.c, _get_argument / _opt_batch_script),
    # re-implemented: whitespace splits, ' and " group, a backslash escapes the next character, an
    # unquoted # ends the line; parsing stops at the first line that is not a comment.
    args = []
    for line in script.split("\n")[1:]:
        if not line.startswith("#SBATCH"):
            if line.strip() and not line.lstrip().startswith("#"):
                break
            continue
        rest, arg, quote, escape, started = line[len("#SBATCH"):], "", None, False, False
        for ch in rest + "\0":
            if escape:
                arg, escape, started = arg + ch, False, True
            elif ch == "\\":
                escape = True
            elif quote:
                if ch == quote:
                    quote = None
                elif ch == "\0":
                    raise SystemExit("sbatch: unmatched quote in " + repr(line))
                else:
                    arg += ch
            elif ch in "'\"":
                quote, started = ch, True
            elif ch == "#" or ch == "\0" or ch.isspace():
                if started:
                    args.append(arg)
                arg, started = "", False
                if ch != " " and not ch.isspace():
                    break
            else:
                arg, started = arg + ch, True
    return args
"""


def _python_bin(tmp_path: Path, name: str, body: str) -> None:
    path = tmp_path / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!{sys.executable}\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def slurm_cluster(tmp_path, monkeypatch):
    """Stub sbatch / srun / scontrol / sacct as real executables: sbatch parses the #SBATCH lines
    as Slurm does and runs the script with bash (as the batch step would); srun records its argv."""
    rec = tmp_path / "rec"
    rec.mkdir()
    _python_bin(tmp_path, "sbatch", SBATCH_PARSER + f"""
import json, os, subprocess, sys
script = open(sys.argv[-1]).read()
json.dump(sbatch_args(script), open({str(rec / 'sbatch.json')!r}, "w"))
env = dict(os.environ, SLURM_NNODES="1", SLURM_JOB_ID="77", SLURM_JOB_NODELIST="node0")
subprocess.run(["bash", sys.argv[-1]], env=env, check=True, cwd={str(tmp_path)!r})
print("77;cluster")
""")
    _python_bin(tmp_path, "srun", f"""
import json, sys
json.dump(sys.argv[1:], open({str(rec / 'srun.json')!r}, "w"))
""")
    _fake_bin(tmp_path, "scontrol", 'echo node0\n')
    _fake_bin(tmp_path, "sacct", 'echo COMPLETED\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return rec


HOSTILE = "run $(touch PWNED1) `touch PWNED2`; touch PWNED3 & 'q' \"dq\" #hash 100% \\bs"


def test_hostile_paths_reach_srun_and_sbatch_verbatim_and_run_nothing(tmp_path, slurm_cluster, monkeypatch):
    import json

    from ragtune.launch import launch_command

    cwd = tmp_path / f"cwd {HOSTILE}"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    workdir = tmp_path / HOSTILE
    args = ["finetune", "llm", "--config", str(workdir / "finetune.yaml")]
    cfg = LauncherConfig(type="slurm", partition="gpu,debug", time="1-02:00:00", poll_seconds=0.01,
                         extra_args=["--comment=a \"quoted\" #not-a-comment $(touch PWNED4)", "--exclusive"])
    launch_command(args, cfg, workdir)
    assert not list(tmp_path.rglob("PWNED*")), "a value ran as shell"
    srun = json.loads((slurm_cluster / "srun.json").read_text())
    assert srun[:6] == ["torchrun", "--nnodes=1", "--nproc_per_node=1", "--rdzv_backend=c10d",
                        "--rdzv_endpoint=node0:29500", "--rdzv_id=77"]
    assert srun[6:] == ["-m", "ragtune.cli", *args]
    sbatch = json.loads((slurm_cluster / "sbatch.json").read_text())
    log_file = str((workdir / "launcher.log").resolve())
    assert f"--output={log_file.replace('%', '%%')}" in sbatch     # Slurm turns %% back into %
    assert f"--job-name=ragtune-{HOSTILE}" in sbatch
    assert "--comment=a \"quoted\" #not-a-comment $(touch PWNED4)" in sbatch
    assert {"--partition=gpu,debug", "--time=1-02:00:00", "--exclusive"} <= set(sbatch)


@pytest.mark.parametrize("field, value, words", [
    ("partition", "gpu\ntouch /tmp/x", "partition"),
    ("partition", "gpu debug", "partition"),
    ("time", "04:00:00\nrm -rf ~", "time"),
    ("time", "four hours", "time"),
    ("extra_args", ["--exclusive\ntouch PWNED"], "newline"),
    ("extra_args", ["--mem=1G\r"], "control character"),
    ("extra_args", ["touch PWNED"], "not an option"),
])
def test_hostile_settings_are_rejected_naming_the_field(field, value, words):
    from ragtune.core.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        LauncherConfig.build("launcher", type="slurm", **{field: value})
    assert field in str(exc.value) and words in str(exc.value)


def test_newline_in_a_path_is_refused_before_any_script_is_written(tmp_path, slurm_cluster):
    from ragtune.core.errors import ConfigError
    from ragtune.launch import launch_command

    workdir = tmp_path / "run\ntouch PWNED"
    with pytest.raises(ConfigError, match="newline"):
        launch_command(["finetune", "llm"], LauncherConfig(type="slurm"), workdir)
    assert not (workdir / "job.sbatch").exists() and not (slurm_cluster / "sbatch.json").exists()
    assert not list(tmp_path.rglob("PWNED*"))


def test_slurm_dry_run_in_a_run_prints_the_script_and_exits_0(tmp_path, capsys, monkeypatch):
    """Issue 19e: `ragtune run` with launcher slurm + dry_run prints the sbatch script (quoted) and exits 0;
    the fine-tune stage is not marked done and no later stage runs."""
    import json as _json

    import yaml

    from ragtune.cli import main
    from ragtune.data.manuals import generate_manuals, split_by_passage

    train, test = split_by_passage(generate_manuals(4, 2, seed=1), 0.3, seed=1)
    (tmp_path / "train.json").write_text(_json.dumps(train))
    (tmp_path / "test.json").write_text(_json.dumps(test))
    run_dir = tmp_path / "run dir's"
    cfg = {"run_dir": str(run_dir), "data": {"train": str(tmp_path / "train.json"), "eval": str(tmp_path / "test.json")},
           "llm": {"base": "all-MiniLM-L6-v2", "method": "lora", "evaluate_base": False},
           "eval": {"metrics": ["exact"]},
           "launcher": {"type": "slurm", "dry_run": True, "partition": "gpu", "nnodes": 2}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))    # no sbatch anywhere: a dry run must not need it
    assert main(["run", str(tmp_path / "c.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("#!/bin/bash\n#SBATCH --job-name=ragtune-model.launch")
    assert "#SBATCH --partition=gpu" in out and "srun torchrun" in out
    script = run_dir / "finetune_llm" / "model.launch" / "job.sbatch"
    assert script.read_text() in out
    assert "cd " + shlex.quote(str(Path.cwd())) in out
    assert "finetune_llm       dry-run" in out
    assert not (run_dir / "finetune_llm" / ".stage.json").exists()
    assert not (run_dir / "infer_tuned").exists()


def test_torchrun_output_is_streamed_line_by_line_while_the_child_runs(tmp_path):
    """Issue 19e: the child's lines reach the console as they are written, not when it exits: the
    child waits for a file that the test's log handler creates on seeing its first line."""
    import logging

    marker = tmp_path / "seen"
    child = ("import pathlib, sys, time\n"
             "print('first line', flush=True)\n"
             "sys.stdout.write('bar 1/2\\rbar 2/2\\n'); sys.stdout.flush()\n"
             f"p = pathlib.Path({str(marker)!r})\n"
             "t = time.time()\n"
             "while not p.exists():\n"
             "    if time.time() - t > 20: sys.exit(3)\n"
             "    time.sleep(0.05)\n"
             "print('second line', flush=True)\n")
    seen: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())
            if record.getMessage() == "first line":
                marker.write_text("x")

    logger = logging.getLogger("ragtune.launch.child")
    handler = Catch(level=logging.INFO)
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        run_logged([sys.executable, "-c", child], tmp_path / "child.log")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    assert seen == ["first line", "bar 1/2", "bar 2/2", "second line"]
    assert (tmp_path / "child.log").read_bytes() == b"first line\nbar 1/2\rbar 2/2\nsecond line\n"
