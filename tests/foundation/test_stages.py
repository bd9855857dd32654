import pytest

from ragtune.core.config import Config
from ragtune.core.log import get_logger
from ragtune.workflow.stages import Stage, StageFailed, StageRunner

CALLS: list[str] = []
log = get_logger("tests.stages")


class WriteJob(Config):
    """A typed job like every stage's: ``execute()`` does the work, its fields are the spec."""
    out: str
    text: str = "hello"
    a: int = 1
    fail: str | None = None
    write: bool = True

    def execute(self):
        CALLS.append(self.out)
        log.info("writing %s", self.text)
        if self.fail:
            raise ValueError(self.fail)
        if self.write:
            from pathlib import Path

            Path(self.out).write_text(self.text)


def _stage(name, run, **kw):
    inputs, outputs = kw.pop("inputs", []), kw.pop("outputs", ["out.txt"])
    return Stage(name, WriteJob(out=str(run / name / "out.txt"), **kw), inputs=inputs, outputs=outputs)


def test_stage_skips_when_inputs_unchanged_and_reruns_on_change(tmp_path):
    CALLS.clear()
    inp = tmp_path / "train.json"
    inp.write_text("[1]")
    run = tmp_path / "run"
    def make():
        return _stage("convert", run, inputs=[inp])

    assert StageRunner(run).run(make()).status == "ran"
    assert StageRunner(run).run(make()).status == "skipped"
    inp.write_text("[2]")                                   # content change -> rerun
    assert StageRunner(run).run(make()).status == "ran"
    changed = _stage("convert", run, inputs=[inp], a=2)
    assert StageRunner(run).run(changed).status == "ran"   # job spec change -> rerun
    assert StageRunner(run, force=["convert"]).run(changed).status == "ran"
    assert len(CALLS) == 4
    assert "writing hello" in (run / "convert/log.txt").read_text()


def test_failed_stage_keeps_log_and_is_not_marked_done(tmp_path, capsys):
    with pytest.raises(StageFailed) as exc:
        StageRunner(tmp_path).run(_stage("train", tmp_path, fail="bad record 3", outputs=["x"]))
    assert "bad record 3" in str(exc.value) and "log.txt" in str(exc.value)
    log_text = (tmp_path / "train/log.txt").read_text()
    assert "writing hello" in log_text and "ValueError" in log_text      # the traceback is in the file
    assert "Traceback" not in capsys.readouterr().err                    # not on the console
    assert not (tmp_path / "train/.stage.json").exists()


def test_missing_output_is_a_failure(tmp_path):
    with pytest.raises(StageFailed, match="without writing"):
        StageRunner(tmp_path).run(_stage("s", tmp_path, write=False, outputs=["result.json"]))
    # deleting an output of a finished stage makes it run again
    st = _stage("w", tmp_path)
    StageRunner(tmp_path).run(st)
    (tmp_path / "w/out.txt").unlink()
    assert StageRunner(tmp_path).run(st).status == "ran"
