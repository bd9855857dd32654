"""`ragtune eval rag` on a tiny KB made by `data synth`: 2 embedders x 2 LLMs (one local, one over HTTP)."""
import json

import numpy as np
import pytest

from ragtune.cli import main
from ragtune.core.errors import ConfigError
from ragtune.eval.rag_eval import evaluate_rag

from ..eval.judge_server import running_judge
from ..synth.helpers import GOOD, write_kb
from ..synth.teacher_server import running_teacher
from ..tiny_models import make_tiny_embedder


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory, tiny_embedder_dir):
    from ragtune.synth import synthesize

    root = tmp_path_factory.mktemp("rag")
    kb = write_kb(root / "docs", GOOD)
    with running_teacher() as t:
        synthesize(docs=str(kb), output=str(root / "synth"), teacher=t.base_url, embed=str(tiny_embedder_dir),
                   min_chunk_chars=10, neg_num=1, neg_margin=-1.0, eval_fraction=0.5)
    return root / "synth"


@pytest.fixture(scope="module")
def other_embedder(tmp_path_factory):
    return make_tiny_embedder(tmp_path_factory.mktemp("emb") / "tiny-embedder-2", seed=7)


def test_four_cells_retrieval_answers_report_and_resume(tmp_path, synth_dir, tiny_embedder_dir, other_embedder,
                                                        readable_llm_dir, llm_server, http):
    from ragtune.models.embedder import SentenceTransformerEmbedder

    out = tmp_path / "rag"
    cfg = {"evalset": str(synth_dir / "eval.json"), "kb": str(synth_dir / "kb"), "output": str(out),
           "embeds": {"base": str(tiny_embedder_dir), "tuned": str(other_embedder)},
           "llms": {"base": str(readable_llm_dir), "tuned": llm_server.url + "/v1"},
           "embed": str(tiny_embedder_dir), "topk": 2, "max_tokens": 6,
           "llm_dtype": "fp32"}  # as the server (fixture): local and HTTP answers compare exactly
    asked_before = http.get("/metrics").json()["requests"]
    summary = evaluate_rag(**cfg)
    names = ["base embed + base LLM", "tuned embed + base LLM", "base embed + tuned LLM", "tuned embed + tuned LLM"]
    assert list(summary["cells"]) == names
    items = json.loads((synth_dir / "eval.json").read_text())
    chunks = (synth_dir / "kb" / "chunks.txt").read_text().strip().split("\n")
    # retrieval numbers recomputed independently: rank of the source chunk by cosine
    for label, path in (("base", tiny_embedder_dir), ("tuned", other_embedder)):
        emb = SentenceTransformerEmbedder.load(str(path))
        scores = emb.embed_queries([it["question"] for it in items]) @ emb.embed_documents(chunks).T
        ranks = [int((row > row[chunks.index(it["context"])]).sum()) for row, it in zip(scores, items)]
        want_r1 = float(np.mean([r == 0 for r in ranks]))
        want_mrr = float(np.mean([1 / (r + 1) if r < 10 else 0 for r in ranks]))
        got = summary["cells"][f"{label} embed + base LLM"]["retrieval"]
        assert got["recall@1"] == pytest.approx(want_r1) and got["mrr@10"] == pytest.approx(want_mrr)
        assert got == summary["cells"][f"{label} embed + tuned LLM"]["retrieval"]
    # the same model, local and over HTTP, answers the same (greedy) from the same retrieved chunks
    for label in ("base", "tuned"):
        local = json.loads((out / "cells" / f"{label}+base" / "result" / "items.json").read_text())
        remote = json.loads((out / "cells" / f"{label}+tuned" / "result" / "items.json").read_text())
        assert [r["prediction"] for r in local] == [r["prediction"] for r in remote]
        assert len(local) == len(items)
    # one request per distinct prompt: a prompt both embedders produce (same top-2) is answered once
    prompts = [r["instruction"] for label in ("base", "tuned")
               for r in json.loads((out / "cells" / f"{label}+tuned" / "predictions.json").read_text())]
    assert len(set(prompts)) < len(prompts)      # the tiny KB makes some retrievals coincide
    for llm in ("base", "tuned"):
        asked = [r["instruction"] for label in ("base", "tuned")
                 for r in json.loads((out / "cells" / f"{label}+{llm}" / "asked.json").read_text())]
        assert sorted(asked) == sorted(set(prompts))
    # the HTTP LLM got one completion per distinct prompt (+ one model-name probe per cell)
    assert http.get("/metrics").json()["requests"] - asked_before - 1 == len(set(prompts)) + 2
    cell = json.loads((out / "cells" / "base+base" / "result" / "summary.json").read_text())
    assert set(cell["metrics"]) == {"exact", "cmrc_em", "cmrc_f1", "squad_em", "squad_f1", "cosine", "origin"}
    md = (out / "report.md").read_text()
    assert "## Retrieval" in md and "## Answers" in md and "| tuned embed + tuned LLM |" in md
    assert "Items where the runs disagree" in md
    page = (out / "report.html").read_text()
    assert "<h2>Retrieval</h2>" in page and "data:image/png;base64," in page
    # a re-run with the same inputs asks nobody again
    before = http.get("/metrics").json()["requests"]
    evaluate_rag(**cfg)
    assert http.get("/metrics").json()["requests"] == before + 1     # only this /metrics call


def test_faithfulness_with_a_judge_and_cli(tmp_path, synth_dir, tiny_embedder_dir, readable_llm_dir, capsys):
    with running_judge() as judge:
        n = len(json.loads((synth_dir / "eval.json").read_text()))
        judge.script = [json.dumps({"statements": ["s"]}), json.dumps({"verdicts": [{"verdict": 1}]})] * n
        rc = main(["eval", "rag", "--evalset", str(synth_dir / "eval.json"), "--kb", str(synth_dir / "kb"),
                   "--output", str(tmp_path / "r"), "--embedder", f"base={tiny_embedder_dir}",
                   "--llm", f"base={readable_llm_dir}", "--embed", str(tiny_embedder_dir),
                   "--metrics", "exact,cmrc_f1", "--judge-base-url", judge.base_url, "--max-tokens", "4"])
    assert rc == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    cell = summary["cells"]["base embed + base LLM"]
    assert cell["answers"]["faithfulness"] == 1.0 and set(cell["answers"]) == {"exact", "cmrc_f1", "faithfulness"}
    assert "| base embed + base LLM |" in capsys.readouterr().out
    assert main(["eval", "rag", "--evalset", "x", "--kb", "y", "--output", "z", "--embedder", "nolabel",
                 "--llm", "a=b"]) == 1
    with pytest.raises(ConfigError, match="unknown metric 'cmrc_f2'"):
        evaluate_rag(evalset="x", kb="y", output="z", embeds={"a": "b"}, llms={"a": "b"}, metrics=["cmrc_f2"])
