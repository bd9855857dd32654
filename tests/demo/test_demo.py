"""`ragtune demo`'s flow on tiny models (the real one, on gemma-3-270m, is measured in BENCHMARKS.md)."""
import json

import httpx

from ragtune.workflow.demo import MANUALS_TEACHER, distinct_questions, make_demo_data, run_demo, start_manuals_teacher


def test_demo_documents_are_deterministic_one_per_manual(tmp_path):
    a = make_demo_data(tmp_path / "a", 12, seed=5)
    b = make_demo_data(tmp_path / "b", 12, seed=5)
    files_a, files_b = sorted(a["docs"].iterdir()), sorted(b["docs"].iterdir())
    assert len(files_a) == 12 and [f.name for f in files_a] == [f.name for f in files_b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(files_a, files_b))
    facts = json.loads(a["facts"].read_text())
    for f in files_a:
        qa = facts[f.read_text().strip()]
        assert len(qa) == 8 and all(q["answer"] in f.read_text() for q in qa)


def test_manuals_teacher_answers_the_synth_prompt_over_http(tmp_path):
    paths = make_demo_data(tmp_path, 3, seed=1)
    facts = json.loads(paths["facts"].read_text())
    passage = next(iter(facts))
    srv = start_manuals_teacher(paths["facts"], per_chunk=2)
    try:
        models = httpx.get(srv.url + "/v1/models").json()
        r = httpx.post(srv.url + "/v1/chat/completions",
                       json={"model": MANUALS_TEACHER, "messages": [{"role": "user", "content": f"Rules.\n\nPassage:\n{passage}\n"}]})
    finally:
        srv.stop()
    assert models["data"][0]["id"] == MANUALS_TEACHER
    qa = json.loads(r.json()["choices"][0]["message"]["content"])["qa"]
    assert qa == facts[passage][:2]


def test_demo_runs_the_documents_chain_end_to_end_on_tiny_models(tmp_path, tiny_llm_dir, tiny_embedder_dir):
    res = run_demo(tmp_path / "demo", n_machines=6, llm=str(tiny_llm_dir), embed=str(tiny_embedder_dir),
                   finetune={"cutoff_len": 1000, "max_steps": 2, "per_device_train_batch_size": 2},
                   embed_finetune={"per_device_train_batch_size": 4})
    assert res.teacher.startswith(MANUALS_TEACHER) and "not a language model" in res.teacher
    cells = res.summary["cells"]
    assert list(cells) == ["base embed + base LLM", "tuned embed + base LLM", "base embed + tuned LLM",
                           "tuned embed + tuned LLM"]
    n = res.summary["n_items"]
    assert n > 0 and all(c["retrieval"]["n_queries"] == n for c in cells.values())
    assert res.report_html.exists() and "| tuned embed + tuned LLM |" in res.report_md.read_text()
    for stage in ("synth", "finetune_llm", "finetune_embed", "eval_rag"):
        assert (res.run_dir / stage / ".stage.json").exists()
    assert len(res.rag_answers) == 2 and res.rag_answers[0]["question"] != res.rag_answers[1]["question"]
    assert all(set(r) == {"question", "retrieved_right_manual", "answer", "reference"} for r in res.rag_answers)


def test_distinct_questions_picks_different_facts():
    items = [{"question": q} for q in ("What is the A of x?", "What is the A of y?", "Where is x built?")]
    assert [i["question"] for i in distinct_questions(items, 2)] == ["What is the A of x?", "Where is x built?"]
