import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from ragtune.core.errors import BackendError
from ragtune.launch import (LauncherConfig, job_state, run_logged, sbatch_script, submit, torchrun_command,
                            wait_for_job)

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
        srun torchrun --nnodes=$SLURM_NNODES --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint="$head_node:29500" --rdzv_id="$SLURM_JOB_ID" -m ragtune.cli finetune llm --config /runs/x/finetune.yaml
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
    _fake_bin(tmp_path, "sbatch", 'echo "$@" > "%s/submitted"; echo "4242;cluster"\n' % tmp_path)
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
