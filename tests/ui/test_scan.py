"""What the UI reads from disk, without a browser: incremental progress with unknown metric keys,
and run directories of other commands (sweep, eval) listed with their outputs."""
from __future__ import annotations

import json

import httpx

from ragtune.ui.scan import read_progress


def test_progress_is_read_incrementally_with_any_numeric_key(tmp_path):
    path = tmp_path / "progress.jsonl"
    lines = [{"step": 1, "loss": 2.0, "lr": 1e-4, "time": 10.0, "total_steps": 4},
             {"step": 2, "loss": 1.5, "lr": 2e-4, "time": 11.0, "total_steps": 4},
             {"step": 2, "eval_loss": 1.7, "dev": {"exact": 0.25, "cmrc_f1": 0.5, "missing": None}}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 3, "lo')   # a line being written
    first = read_progress(path)
    assert first["points"] == {"loss": [[1, 2.0], [2, 1.5]], "lr": [[1, 1e-4], [2, 2e-4]], "eval_loss": [[2, 1.7]],
                               "dev.exact": [[2, 0.25]], "dev.cmrc_f1": [[2, 0.5]]}
    assert first["total_steps"] == 4 and first["bad_lines"] == 0 and not first["reset"]
    with open(path, "a") as fh:                       # the trainer finishes the line and adds one
        fh.write('ss": 1.2, "some_new_metric": 7}\n{"step": 4, "loss": 1.1}\n')
    second = read_progress(path, first["offset"])
    assert second["points"] == {"loss": [[3, 1.2], [4, 1.1]], "some_new_metric": [[3, 7.0]]}
    path.write_text(json.dumps({"step": 1, "loss": 3.0}) + "\n")     # a fresh start rewrote it
    third = read_progress(path, second["offset"])
    assert third["reset"] and third["points"] == {"loss": [[1, 3.0]]}


def test_sweep_and_eval_dirs_are_listed_with_their_outputs(make_ui, tmp_path):
    from ragtune.workflow.sweep import _write

    root = tmp_path / "runs"
    sweep = root / "sweep-lr"
    rows = [{"name": f"lr{i}", "run_dir": str(sweep / f"lr{i}"), "rank_value": v, "train_minutes": 1.5 + i,
             "train_samples": 20, "steps": 8, "best": {"exact": v}, "eval": {"exact": v / 2}}
            for i, v in enumerate([0.6, 0.4])]
    sweep.mkdir(parents=True)
    _write(sweep, {"rank_by": "dev.exact", "grid": {"llm.finetune.learning_rate": [1e-4, 2e-4]}, "runs": rows})
    evals = root / "evals" / "eval-20260101-000000-abcd"
    evals.mkdir(parents=True)
    (evals / "summary.json").write_text(json.dumps({"run_id": "x", "name": "tuned", "n_items": 2, "evalset": "e.json",
                                                    "predictions": "p.json", "metrics": {}}))
    (evals / "items.json").write_text("[]")
    ui = make_ui(root)
    with httpx.Client(base_url=ui.url, timeout=30) as c:
        listed = {r["id"]: r["kind"] for r in c.get("/api/runs").json()["runs"]}
        assert listed == {"sweep-lr": "sweep", "evals/eval-20260101-000000-abcd": "eval"}
        d = c.get("/api/runs/detail", params={"id": "sweep-lr"}).json()
        assert [r["name"] for r in d["sweep"]["runs"]] == ["lr0", "lr1"]
        assert d["sweep"]["runs"][0]["id"] == "sweep-lr/lr0"
        assert d["sweep"]["runs"][0]["values"] == {"rank_value": 0.6, "train_minutes": 1.5, "train_samples": 20.0,
                                                   "steps": 8.0, "best.exact": 0.6, "eval.exact": 0.3}
        assert {"sweep.json", "sweep.md", "sweep.png"} <= set(d["files"])
        png = c.get("/api/file", params={"id": "sweep-lr", "name": "sweep.png"})
        assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
        outside = c.get("/api/file", params={"id": "sweep-lr", "name": "../../../etc/passwd"})
        assert outside.status_code == 404
        escape = c.get("/api/runs/detail", params={"id": "../.."})
        assert escape.status_code == 400 and "outside the runs directory" in escape.json()["error"]
