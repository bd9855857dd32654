"""Data, Retrieval and the run form's errors in a real browser, checked against the library
functions they show (ragtune.data.validate, ragtune.rag.Retriever, RunConfig)."""
from __future__ import annotations

import json

import yaml

from .conftest import screenshot


def test_data_page_marks_bad_records_and_draws_lengths(page, make_ui, tmp_path, tiny_llm_dir):
    from ragtune.data.validate import validate

    rows = [json.dumps({"instruction": f"what is the pump pressure {i}", "input": "", "output": "2 bar " * (i + 1)})
            for i in range(12)]
    rows[3] = json.dumps({"instruction": "no answer here"})                      # missing output
    rows[5] = json.dumps({"messages": [{"role": "assistant", "content": "hi"}]})  # mixed format
    rows[7] = '{"instruction": "broken'                                             # not JSON
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(rows) + "\n")
    cutoff = sorted(validate(data, cutoff_len=1, tokenizer=str(tiny_llm_dir)).lengths)[4]   # some over, some not
    report = validate(data, cutoff_len=cutoff, tokenizer=str(tiny_llm_dir))
    ui = make_ui(tmp_path / "runs")
    page.goto(ui.url + "/#/data")
    page.fill("#data-path", str(data))
    page.fill("#data-tokenizer", str(tiny_llm_dir))
    page.fill("#data-cutoff", str(cutoff))
    page.click("#data-check")
    page.wait_for_selector("#records")
    bad_rows = page.eval_on_selector_all("#records tr.bad", "rs => rs.map(r => Number(r.dataset.record))")
    assert bad_rows == sorted(report.invalid_records) == [3, 5, 7]
    assert "field 'output'" not in page.text_content('#records tr[data-record="3"]')   # shown as the field itself:
    assert "output: required field is missing" in page.text_content('#records tr[data-record="3"]')
    assert "not valid JSON" in page.text_content('#records tr[data-record="7"]')
    assert f"{report.valid} valid, {len(report.invalid_records)} with problems" in page.text_content("#data-summary")
    # the histogram: every valid sample counted once, the cutoff drawn, the over-long count stated
    counts = page.eval_on_selector_all("#length-hist rect.bin", "rs => rs.map(r => Number(r.dataset.count))")
    assert sum(counts) == len(report.lengths) == 9
    assert page.get_attribute("#length-hist line.cutoff", "data-cutoff") == str(cutoff)
    assert f"{report.over_long} of 9 samples over cutoff_len={cutoff}" in page.text_content("#length-summary")
    assert 0 < report.over_long < 9
    screenshot(page, tmp_path, "data")
    # only the records with problems
    page.check("#data-only-issues")
    page.click("#data-check")
    page.wait_for_function("document.querySelectorAll('#records tr[data-record]').length === 3")


def test_retrieval_page_base_vs_tuned_with_reference(page, make_ui, tmp_path, tiny_embedder_dir):
    from tiny_models import make_tiny_embedder

    from ragtune.rag import Document, Retriever

    tuned = make_tiny_embedder(tmp_path / "tuned-embedder", seed=1)
    lines = ["The pump P-100 runs at 2 bar.", "Replace the filter of valve V-7 every 6 months.",
             "Station north uses model X9.", "The serial number of the pump is A1B2.",
             "Pressure above 5 bar opens the relief valve.", "Use the original text to answer.",
             "Filters are replaced every 300 hours.", "The answer is in the known paragraph."]
    kb = tmp_path / "kb.txt"
    kb.write_text("\n".join(lines) + "\n")
    evalset = tmp_path / "eval.jsonl"
    evalset.write_text("\n".join(json.dumps({"query": q, "corpus": [ref]}) for q, ref in [
        ("how often is the valve filter replaced", lines[1]), ("what pressure opens the relief valve", lines[4])]))
    ui = make_ui(tmp_path / "runs")
    page.goto(ui.url + "/#/retrieval")
    page.fill("#ret-kb", str(kb))
    page.fill("#ret-base", str(tiny_embedder_dir))
    page.fill("#ret-tuned", str(tuned))
    page.fill("#ret-topk", str(len(lines)))
    page.fill("#ret-evalset", str(evalset))
    page.click("text=Load questions")
    page.wait_for_selector("#ret-pick option[value='1']", state="attached")
    page.select_option("#ret-pick", "1")
    assert page.input_value("#ret-question") == "what pressure opens the relief valve"
    page.click("#ret-go")
    page.wait_for_selector('[data-column="tuned"] .hit')
    for label, embed in (("base", tiny_embedder_dir), ("tuned", tuned)):
        doc = Document(str(kb), embed=str(embed))
        doc.create_node_group("chunks", transform="line")
        expected = [n.text for n in Retriever(doc, "chunks", topk=len(lines)).retrieve(
            "what pressure opens the relief valve")]
        shown = page.eval_on_selector_all(f'[data-column="{label}"] .hit', "hs => hs.map(h => h.lastChild.textContent)")
        assert shown == expected
        marked = page.eval_on_selector_all(f'[data-column="{label}"] .hit.ref-exact', "hs => hs.map(h => h.lastChild.textContent)")
        assert marked == [lines[4]]
        rank = expected.index(lines[4]) + 1
        assert page.get_attribute(f'[data-column="{label}"] [data-rank]', "data-rank") == str(rank)
    screenshot(page, tmp_path, "retrieval")


def test_run_form_errors_inline_launcher_choice_and_a_failing_run(page, make_ui, tmp_path, squad_files):
    runs = tmp_path / "runs"
    ui = make_ui(runs)
    page.goto(ui.url + "/#/new")
    page.wait_for_function("document.querySelector('#yaml')?.value.includes('run_dir')")
    # a mistyped key in the YAML: the message names the path and the closest valid key
    cfg = yaml.safe_load(page.input_value("#yaml"))
    cfg["run_dir"] = str(runs / "broken")
    cfg["data"] = {"train": str(squad_files / "train.json")}
    cfg["llm"]["finetune"]["lora_rnak"] = 4
    page.fill("#yaml", yaml.safe_dump(cfg))
    page.wait_for_selector("#check-error")
    error = page.text_content("#check-error")
    assert "lora_rnak" in error and "did you mean 'lora_rank'" in error
    assert page.is_disabled("#start")
    # a missing data file: marked on its field
    del cfg["llm"]["finetune"]["lora_rnak"]
    cfg["data"]["train"] = str(tmp_path / "missing.json")
    page.fill("#yaml", yaml.safe_dump(cfg))
    page.wait_for_selector('.field.invalid[data-field="data.train"]')
    assert "does not exist" in page.text_content('[data-field="data.train"] .field-error')
    screenshot(page, tmp_path, "new-run")
    # the launcher is a choice; its settings go into the YAML
    page.fill('[data-key="data.train"]', str(squad_files / "train.json"))
    page.select_option('[data-key="launcher.type"]', "torchrun")
    page.fill('[data-key="launcher.nproc_per_node"]', "2")
    page.wait_for_function("document.querySelector('#yaml')?.value.includes('nproc_per_node: 2')")
    assert yaml.safe_load(page.input_value("#yaml"))["launcher"] == {"type": "torchrun", "nproc_per_node": 2}
    page.select_option('[data-key="launcher.type"]', "local")
    page.fill('[data-key="launcher.nproc_per_node"]', "")
    # a run that fails says so, with the reason (no silent Start button): this base model does not exist
    page.fill('[data-key="llm.base"]', str(tmp_path / "no-such-model"))
    page.wait_for_selector("#check-ok")
    page.click("#start")
    page.wait_for_selector('#run-head [data-state="failed"]', timeout=180_000)
    message = page.text_content("#run-error")
    assert "finetune_llm" in message and "no-such-model" in message
    assert page.locator('[data-stage="finetune_llm"] [data-state="failed"]').count() == 1
    assert page.locator('[data-stage="prepare_data"] [data-state="done"]').count() == 1
    proc = json.loads((runs / "broken" / "process.json").read_text())
    assert proc["exit_code"] == 1
