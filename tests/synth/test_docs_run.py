"""`ragtune run` with the documents source: typed, checked before any stage, resumable stage by stage."""
import json

import yaml

from ragtune.cli import main

from .helpers import GOOD, write_kb
from .teacher_server import running_teacher


def _config(tmp_path, teacher_url, llm, embed, **data):
    kb = write_kb(tmp_path / "kb", GOOD)
    cfg = {"run_dir": str(tmp_path / "run"),
           "data": {"from": "docs", "path": str(kb), "teacher": teacher_url, "embed": str(embed),
                    "min_chunk_chars": 10, "neg_num": 1, "neg_margin": -1.0, "eval_fraction": 0.4, **data},
           "llm": {"base": str(llm), "finetune": {"max_steps": 2, "cutoff_len": 1000, "per_device_train_batch_size": 2},
                   "infer": {"max_tokens": 4}},
           "embed": {"base": str(embed), "finetune": {"per_device_train_batch_size": 4, "dtype": "fp32"}, "topk": 1},
           "eval": {"metrics": ["exact", "cmrc_f1"], "embed": str(embed)}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_docs_run_completes_then_skips_every_stage(tmp_path, tiny_llm_dir, tiny_embedder_dir, capsys):
    with running_teacher() as teacher:
        cfg = _config(tmp_path, teacher.base_url, tiny_llm_dir, tiny_embedder_dir)
        assert main(["run", str(cfg), "--list-stages"]) == 0
        assert capsys.readouterr().out.split() == ["synth", "finetune_llm", "finetune_embed", "eval_rag"]
        assert main(["run", str(cfg)]) == 0
        first = capsys.readouterr().out
        asked = len(teacher.requests)
        assert main(["run", str(cfg)]) == 0
        second = capsys.readouterr().out
    assert "| tuned embed + tuned LLM |" in first and second.count("skipped") == 4
    assert len(teacher.requests) == asked == len(GOOD)
    run = tmp_path / "run"
    summary = json.loads((run / "eval_rag" / "report" / "summary.json").read_text())
    assert summary["embeds"]["tuned"] == str(run / "finetune_embed" / "model")
    assert summary["llms"]["tuned"] == str(run / "finetune_llm" / "model")
    assert set(next(iter(summary["cells"].values()))["answers"]) == {"exact", "cmrc_f1"}


def test_docs_run_errors_come_before_any_stage(tmp_path, tiny_llm_dir, tiny_embedder_dir, capsys):
    cases = [({"questions_per_chnk": 2}, "did you mean 'questions_per_chunk'"),
             ({"teacher": "http://127.0.0.1:9/v1", "retries": 0}, "teacher http://127.0.0.1:9/v1 is not usable"),
             ({"path": str(tmp_path / "nope")}, "data.path")]
    with running_teacher() as teacher:
        for extra, message in cases:
            cfg = _config(tmp_path, teacher.base_url, tiny_llm_dir, tiny_embedder_dir, **extra)
            assert main(["run", str(cfg)]) == 1
            assert message in capsys.readouterr().err
            assert not (tmp_path / "run").exists()
        cfg = _config(tmp_path, teacher.base_url, tiny_llm_dir, tiny_embedder_dir)
        data = yaml.safe_load(cfg.read_text())
        data["embed"]["finetune"]["learning_rat"] = 1
        cfg.write_text(yaml.safe_dump(data))
        assert main(["run", str(cfg)]) == 1
        assert "did you mean 'learning_rate'" in capsys.readouterr().err
        assert teacher.requests == [] and not (tmp_path / "run").exists()
