"""`ragtune demo`'s flow on tiny models (the real one, on gemma-3-270m, is measured in BENCHMARKS.md)."""
import json

from ragtune.workflow.demo import distinct_questions, make_demo_data, run_demo


def test_demo_data_is_deterministic_and_split_by_manual(tmp_path):
    a = make_demo_data(tmp_path / "a", 12, seed=5)
    b = make_demo_data(tmp_path / "b", 12, seed=5)
    for key in ("train", "eval", "kb"):
        assert a[key].read_bytes() == b[key].read_bytes()
    train = json.loads(a["train"].read_text())
    test = json.loads(a["eval"].read_text())
    assert {r["context"] for r in train}.isdisjoint({r["context"] for r in test})
    kb_lines = a["kb"].read_text().strip().split("\n")
    assert len(kb_lines) == 12 and all(r["context"] in kb_lines for r in test)


def test_demo_runs_end_to_end_on_tiny_models(tmp_path, tiny_llm_dir, tiny_embedder_dir):
    res = run_demo(tmp_path / "demo", n_machines=5, llm=str(tiny_llm_dir), embed=str(tiny_embedder_dir),
                   finetune={"cutoff_len": 1000, "max_steps": 2, "per_device_train_batch_size": 2})
    assert set(res.summaries) == {"base", "tuned"}
    assert res.summaries["tuned"]["n_items"] == res.summaries["base"]["n_items"] > 0
    assert res.report_html.exists() and "| tuned" in res.report_md.read_text()
    assert len(res.rag_answers) == 2
    assert res.rag_answers[0]["question"] != res.rag_answers[1]["question"]
    assert all(set(r) == {"question", "retrieved_right_manual", "answer", "reference"} for r in res.rag_answers)


def test_distinct_questions_picks_different_facts():
    items = [{"question": q} for q in ("What is the A of x?", "What is the A of y?", "Where is x built?")]
    assert [i["question"] for i in distinct_questions(items, 2)] == ["What is the A of x?", "Where is x built?"]
