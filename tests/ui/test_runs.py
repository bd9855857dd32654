"""The Runs page in a real browser: start a tiny `ragtune run` from the form, watch its loss curve
grow, reload mid-run, stop it (SIGTERM -> checkpoint), resume it to the end, then open the
comparison of its evals and ask the chat page (base, tuned, remote) with a streamed answer."""
from __future__ import annotations

import json
import re
import time

import yaml

from .conftest import screenshot

STEPS = 16


def _fill(page, key, value):
    page.fill(f'[data-key="{key}"]', str(value))


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def loss_points(page) -> int:
    if page.locator('#run-head [data-state="failed"]').count():
        raise AssertionError("the run failed: " + page.text_content("#run-message"))
    n = page.get_attribute('#chart-loss path[data-series="loss"]', "data-n", timeout=1000) \
        if page.locator('#chart-loss path[data-series="loss"]').count() else None
    return int(n) if n else 0


def test_start_watch_reload_stop_resume_compare_chat(page, make_ui, tmp_path, readable_llm, squad_files,
                                                      tiny_embedder_dir):
    runs = tmp_path / "runs"
    ui = make_ui(runs)
    page.goto(ui.url + "/#/new")
    page.wait_for_selector("#yaml")
    page.wait_for_function("document.querySelector('#yaml')?.value.includes('run_dir')")

    # the form: fields, then a bad value shown inline next to its field
    _fill(page, "run_dir", "tiny")
    _fill(page, "llm.base", readable_llm)
    _fill(page, "data.train", squad_files / "train.json")
    _fill(page, "data.eval", squad_files / "test.json")
    _fill(page, "eval.embed", tiny_embedder_dir)
    _fill(page, "llm.finetune.learning_rate", "-1")
    page.wait_for_selector('.field.invalid[data-field="llm.finetune.learning_rate"] .field-error')
    assert "greater than 0" in page.text_content("#check-error")
    assert page.is_disabled("#start")
    _fill(page, "llm.finetune.learning_rate", "0.001")
    # few steps keep the run short; two micro-batches per step keep it slow enough to stop half-way
    for key, value in {"llm.finetune.max_steps": STEPS, "llm.finetune.per_device_train_batch_size": 1,
                       "llm.finetune.save_steps": 2, "llm.finetune.cutoff_len": 1000, "llm.finetune.num_train_epochs": 1}.items():
        _fill(page, key, value)
    page.select_option('[data-key="launcher.type"]', "local")
    page.wait_for_selector("#check-ok")
    assert "7 stages" in page.text_content("#check-ok")
    # the YAML shown is what will run, and the CLI line reproduces it
    shown = yaml.safe_load(page.input_value("#yaml"))
    assert shown["llm"]["finetune"]["max_steps"] == STEPS and shown["launcher"] == {"type": "local"}
    assert page.text_content("#new-cli").endswith(f"ragtune run {runs / 'tiny' / 'run.yaml'}")
    # the YAML is editable too, and the form follows it: short answers, a log line per step
    edited = yaml.safe_load(page.input_value("#yaml"))
    edited["llm"]["infer"]["max_tokens"] = 4
    edited["llm"]["finetune"]["logging_steps"] = 1
    edited["llm"]["finetune"]["gradient_accumulation_steps"] = 2
    # a dev metric decoded on 2 held-out records every 4 steps: its curve appears next to the loss
    edited["llm"]["finetune"].update(val_size=2, eval_steps=4, dev_metrics=["exact"], dev_max_tokens=4)
    edited["llm"]["finetune"]["save_steps"] = 3
    page.fill("#yaml", yaml.safe_dump(edited))
    page.wait_for_function("document.querySelector('[data-key=\"llm.finetune.save_steps\"]')?.value === '3'")
    page.wait_for_function("document.querySelector('#start')?.disabled === false")
    page.click("#start")

    # the run page: running, its own process, the loss curve grows
    page.wait_for_url(re.compile(r"#/runs/tiny$"))
    page.wait_for_selector('#run-head [data-state="running"]', timeout=60_000)
    proc = json.loads((runs / "tiny" / "process.json").read_text())
    assert proc["argv"][1:] == ["-m", "ragtune.cli", "run", str(runs / "tiny" / "run.yaml")]
    assert page.text_content("#cli") == proc["cli"]
    first = wait_for(lambda: loss_points(page) >= 2 and loss_points(page), 240, "two loss points on the chart")
    more = wait_for(lambda: loss_points(page) > first and loss_points(page), 60, "the loss chart to update")
    assert more > first
    screenshot(page, tmp_path, "runs-live")

    # reload mid-run: same run, same state, the curve is rebuilt from disk (not from page memory)
    page.reload()
    page.wait_for_selector('#run-head [data-state="running"]')
    after_reload = wait_for(lambda: loss_points(page), 30, "the chart after the reload")
    assert after_reload >= more
    assert page.locator('[data-stage="finetune_llm"] [data-state="running"]').count() == 1
    assert "step" in page.text_content("#log")

    # stop: SIGTERM to the process group; the trainer checkpoints and the state says stopped
    page.click("#stop")
    page.wait_for_selector('#run-head [data-state="stopped"]', timeout=120_000)
    proc = json.loads((runs / "tiny" / "process.json").read_text())
    assert proc["stop_requested"] and proc["exit_code"] == 143, proc   # the CLI: terminated after a checkpoint
    model = runs / "tiny" / "finetune_llm" / "model"
    stopped_at = max(int(p.name.split("-")[1]) for p in (model / "checkpoints").glob("step-*"))
    assert 0 < stopped_at < STEPS
    assert f"step-{stopped_at}" in page.text_content("#stopped-note")
    assert "terminated (SIGTERM)" in (model / "train.log").read_text()
    assert not (runs / "tiny" / "finetune_llm" / ".stage.json").exists()

    # resume: the same command again; training continues from the checkpoint, the run finishes
    page.click("#resume")
    page.wait_for_selector('#run-head [data-state="finished"]', timeout=300_000)
    train_log = (model / "train.log").read_text()
    assert f"resumed from {model / 'checkpoints' / f'step-{stopped_at}'} (step {stopped_at})" in train_log
    steps = [json.loads(line)["step"] for line in (model / "progress.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, STEPS + 1))       # every step once: continued, not redone
    assert page.locator('#stage-table [data-state="done"]').count() == 7
    assert int(page.get_attribute('#chart-loss path[data-series="loss"]', "data-n")) == STEPS
    lines = [json.loads(line) for line in (model / "progress.jsonl").read_text().splitlines()]
    dev_points = [e for e in lines if "dev" in e]
    assert dev_points and int(page.get_attribute('#chart-dev path[data-series="dev.exact"]', "data-n")) == len(dev_points)
    assert int(page.get_attribute('#chart-loss path[data-series="eval_loss"]', "data-n")) == \
        sum("eval_loss" in e for e in lines)
    screenshot(page, tmp_path, "runs")

    # compare this run's evals
    page.click("#compare-evals")
    page.wait_for_selector("#compare-table")
    labels = page.eval_on_selector_all("#compare-table tr[data-label]", "rows => rows.map(r => r.dataset.label)")
    assert labels == ["base", "tuned"]
    summary = json.loads((runs / "tiny" / "eval_tuned" / "result" / "summary.json").read_text())
    cell = page.text_content('#compare-table tr[data-label="tuned"] td[data-metric="origin"]')
    assert cell == _format(summary["metrics"]["origin"])
    assert page.locator('#compare-chart rect[data-series="tuned"]').count() == len(summary["metrics"])
    screenshot(page, tmp_path, "compare")

    _chat(page, ui, tmp_path, readable_llm, model, tiny_embedder_dir)


def _format(agg):
    from ragtune.eval.report import format_score

    return format_score(agg)


def _chat(page, ui, tmp_path, readable_llm, tuned_dir, embedder):
    """Base, tuned and a remote OpenAI-compatible server (ragtune serve's app on a real port),
    answers streamed; the base answer equals the engine's own greedy answer."""
    from ragtune.engine.base import SamplingParams
    from ragtune.engine.builtin import BuiltinEngine
    from ragtune.serve.app import create_app
    from ragtune.serve.server import ServerThread

    question = "what is the pressure of the pump"
    engine = BuiltinEngine.load(str(readable_llm))
    expected = engine.generate([[{"role": "user", "content": question}]], SamplingParams(max_tokens=24))[0].text
    remote = ServerThread(create_app(engine), port=0).start()
    try:
        page.goto(ui.url + "/#/chat")
        page.wait_for_selector('[data-model="base"]')
        page.fill('[data-model="base"]', str(readable_llm))
        page.wait_for_function("(document.querySelector('[data-model=\"tuned\"]')?.value ?? '') !== ''")
        assert page.input_value('[data-model="tuned"]') == str(tuned_dir)   # offered from the runs dir
        page.check('[data-enable="remote"]')
        page.fill('[data-url="remote"]', remote.url + "/v1")
        page.fill("#chat-max-tokens", "24")
        page.fill("#chat-question", question)
        page.click("#chat-send")
        for key in ("base", "tuned", "remote"):
            page.wait_for_selector(f'[data-answer="{key}"][data-done="1"]', timeout=120_000)
            assert page.locator(f'[data-error="{key}"]').count() == 0
        base = page.text_content('[data-answer="base"]')
        assert base == expected and len(expected) > 10
        assert int(page.get_attribute('[data-answer="base"]', "data-chunks")) >= 2   # arrived in pieces
        assert page.text_content('[data-answer="remote"]') == expected          # same model behind HTTP
        assert int(page.get_attribute('[data-answer="remote"]', "data-deltas")) >= 2
        screenshot(page, tmp_path, "chat")
        # reload: the conversation is still there (kept in the browser's storage)
        page.reload()
        page.wait_for_selector('[data-transcript="base"] .turn.assistant')
        assert page.text_content('[data-transcript="base"] .turn.assistant') == expected
        _rag(page, tmp_path, engine, embedder)
    finally:
        remote.stop()
        engine.close()


def _rag(page, tmp_path, engine, embedder):
    """Through the RAG pipeline: the top-2 chunks of a knowledge base go into the chapter's prompt
    (ChatPrompter with context_str); the answer equals the engine's on that same prompt."""
    from ragtune.core.prompt import ChatPrompter
    from ragtune.engine.base import SamplingParams
    from ragtune.rag import Document, Retriever
    from ragtune.ui.playground import DEFAULT_INSTRUCTION

    kb = tmp_path / "kb.txt"
    kb.write_text("The pump runs at 2 bar.\nReplace the filter every 6 months.\nStation north uses model X9.\n")
    question = "how often is the filter replaced"
    doc = Document(str(kb), embed=str(embedder))
    doc.create_node_group("chunks", transform="line")
    hits = [n.text for n in Retriever(doc, "chunks", topk=2).retrieve(question)]
    messages = ChatPrompter(DEFAULT_INSTRUCTION, extra_keys=["context_str"]).messages(
        {"context_str": hits, "query": question})
    expected = engine.generate([messages], SamplingParams(max_tokens=24))[0].text
    page.click("#chat-clear")
    for key in ("tuned", "remote"):
        page.uncheck(f'[data-enable="{key}"]')
    page.select_option("#chat-mode", "rag")
    page.fill("#chat-kb", str(kb))
    page.fill("#chat-embed", str(embedder))
    page.fill("#chat-topk", "2")
    page.fill("#chat-question", question)
    page.click("#chat-send")
    page.wait_for_selector('[data-answer="base"][data-done="1"]', timeout=120_000)
    shown = page.eval_on_selector_all('[data-transcript="base"] details .hit', "hs => hs.map(h => h.lastChild.textContent)")
    assert shown == hits
    assert page.text_content('[data-answer="base"]') == expected
