import pytest

from ragtune.workflow.stages import Stage, StageFailed, StageRunner


def _writer(calls, text="hello"):
    def fn(ctx):
        calls.append(ctx.name)
        ctx.logger.info("writing %s", text)
        (ctx.dir / "out.txt").write_text(text)
    return fn


def test_stage_skips_when_inputs_unchanged_and_reruns_on_change(tmp_path):
    inp = tmp_path / "train.json"
    inp.write_text("[1]")
    calls = []
    make = lambda: Stage("convert", _writer(calls), {"a": 1}, inputs=[inp], outputs=["out.txt"])
    assert StageRunner(tmp_path / "run").run(make()).status == "ran"
    assert StageRunner(tmp_path / "run").run(make()).status == "skipped"
    inp.write_text("[2]")                                   # content change -> rerun
    assert StageRunner(tmp_path / "run").run(make()).status == "ran"
    changed = Stage("convert", _writer(calls), {"a": 2}, inputs=[inp], outputs=["out.txt"])
    assert StageRunner(tmp_path / "run").run(changed).status == "ran"   # config change -> rerun
    assert StageRunner(tmp_path / "run", force=["convert"]).run(changed).status == "ran"
    assert len(calls) == 4
    assert "writing hello" in (tmp_path / "run/convert/log.txt").read_text()


def test_failed_stage_keeps_log_and_is_not_marked_done(tmp_path):
    def boom(ctx):
        ctx.logger.info("about to fail")
        raise ValueError("bad record 3")

    with pytest.raises(StageFailed) as exc:
        StageRunner(tmp_path).run(Stage("train", boom, outputs=["x"]))
    assert "bad record 3" in str(exc.value) and "log.txt" in str(exc.value)
    log = (tmp_path / "train/log.txt").read_text()
    assert "about to fail" in log and "ValueError" in log
    assert not (tmp_path / "train/.stage.json").exists()


def test_missing_output_is_a_failure(tmp_path):
    with pytest.raises(StageFailed, match="without writing"):
        StageRunner(tmp_path).run(Stage("s", lambda ctx: None, outputs=["result.json"]))
    # deleting an output of a finished stage makes it run again
    calls = []
    st = Stage("w", _writer(calls), outputs=["out.txt"])
    StageRunner(tmp_path).run(st)
    (tmp_path / "w/out.txt").unlink()
    assert StageRunner(tmp_path).run(st).status == "ran"
