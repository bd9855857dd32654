"""The prompt follows the model (issue 19): a fine-tune records the prompt it trained with and
infer / serve reuse it; the plain and named templates stop at their own markers; CLI escapes."""
from __future__ import annotations

import json
import logging

import pytest

torch = pytest.importorskip("torch")

from ragtune.core.errors import ConfigError  # noqa: E402
from ragtune.core.prompt import (  # noqa: E402
    CHAT_TEMPLATES,
    PROMPT_FILE,
    PromptConfig,
    build_prompt,
    encode_prompt,
    read_recorded_prompt,
    render_turns,
    template_stops,
    unescape_cli,
)
from ragtune.engine.builtin import BuiltinEngine, SamplingParams  # noqa: E402


def _squad_rows(n: int = 12) -> list[dict]:
    rows = []
    for i in range(n):
        code = "ABCDEFGHJKLM"[i]
        ctx = f"北京 pump station {i} serial {code} 段落"
        rows.append({"id": str(i), "context": ctx, "question": f"serial {i}?",
                     "answers": {"text": [code], "answer_start": [ctx.index(code)]}})
    return rows


@pytest.fixture(scope="module")
def zh_finetune(tiny_llm_dir, tmp_path_factory):
    """A tiny LoRA fine-tune on data converted with the Chinese template and a system prompt."""
    import ragtune as rt
    from ragtune.data.squad import squad_to_alpaca

    tmp = tmp_path_factory.mktemp("zh_ft")
    (tmp / "squad.json").write_text(json.dumps(_squad_rows(), ensure_ascii=False), encoding="utf-8")
    squad_to_alpaca(tmp / "squad.json", tmp / "train.json", template_lang="zh")
    out = tmp / "run"
    rt.finetune.lora.run(str(tiny_llm_dir), str(tmp / "train.json"), str(out), max_steps=2, cutoff_len=256,
                         per_device_train_batch_size=2, dtype="fp32", prompt={"system": "只用原文回答。"},
                         pack_shared_prefix=False)
    return out, tmp / "train.json"


def _trained_prompt_text(tokenizer, record: dict, cfg: PromptConfig) -> str:
    """What training fed the model before the answer (the non-trainable segments)."""
    from ragtune.data.formats import alpaca_to_messages

    segments = render_turns(tokenizer, alpaca_to_messages(record)["messages"], cfg)
    return "".join(text for text, trainable in segments[: [t for _, t in segments].index(True)])


def test_finetune_records_its_prompt_and_infer_and_serve_reuse_it(zh_finetune, tmp_path, caplog):
    from ragtune.data.squad import TEMPLATES
    from ragtune.infer.runner import InferConfig, item_input, recorded_instruction_template, run_infer
    from ragtune.serve.server import ServeConfig, build_engine

    out, train = zh_finetune
    saved = json.loads((out / PROMPT_FILE).read_text(encoding="utf-8"))
    assert saved["prompt"]["system"] == "只用原文回答。" and saved["chat_format"] == "plain"
    assert saved["template_lang"] == "zh" and saved["instruction_template"] == TEMPLATES["zh"]
    recorded = read_recorded_prompt(out)
    assert recorded is not None and read_recorded_prompt(out / "merged") == recorded

    record = json.loads(train.read_text(encoding="utf-8"))[0]
    row = _squad_rows()[0]
    item = {"context": row["context"], "question": row["question"], "answers": "A"}
    with caplog.at_level(logging.INFO, logger="ragtune"):
        engine = BuiltinEngine.load(str(out), dtype="fp32")   # no prompt flags at all
        qa = recorded_instruction_template(str(out), None)
        _, messages = item_input(item, None, qa_template=qa)
        trained = _trained_prompt_text(engine.tokenizer, record, recorded.prompt)
        assert build_prompt(engine.tokenizer, messages, engine.prompt) == trained
        assert engine.encode_chat(messages) == encode_prompt(engine.tokenizer, trained)
        (tmp_path / "eval.json").write_text(json.dumps([item], ensure_ascii=False), encoding="utf-8")
        rows = run_infer(InferConfig(evalset=str(tmp_path / "eval.json"), output=str(tmp_path / "p.json"),
                                     model=str(out), max_tokens=2), engine=engine, show_progress=False)
        assert len(rows) == 1
        served = build_engine(ServeConfig(model=str(out), dtype="fp32"))   # `ragtune serve DIR`
        assert served.prompt == engine.prompt and served.encode_chat(messages) == engine.encode_chat(messages)
    logs = [r for r in caplog.records if "recorded with the fine-tune" in r.getMessage()]
    assert logs and all(r.levelno == logging.INFO for r in logs)
    assert any("template_lang=zh" in r.getMessage() for r in logs)
    engine.close()
    served.close()


def test_explicit_prompt_settings_override_the_recorded_ones(zh_finetune, caplog):
    from ragtune.infer.runner import item_input, recorded_instruction_template

    out, _ = zh_finetune
    with caplog.at_level(logging.INFO, logger="ragtune"):
        engine = BuiltinEngine.load(str(out), dtype="fp32", prompt={"system": "Answer in English."})
        qa = recorded_instruction_template(str(out), "Q: {question}")
    assert engine.prompt.system == "Answer in English." and engine.prompt.template == "auto"
    assert build_prompt(engine.tokenizer, "q", engine.prompt).startswith("Answer in English.\n\n### Instruction:")
    item = {"context": "c", "question": "which?"}
    assert item_input(item, "Q: {question}", qa_template=qa)[1] == [{"role": "user", "content": "Q: which?"}]
    messages = [r.getMessage() for r in caplog.records]
    assert any("explicit prompt settings override the recorded ones" in m and "Answer in English." in m
               for m in messages)
    assert any("--template overrides the instruction template recorded" in m for m in messages)
    engine.close()


def test_gemma_template_renders_byte_exactly():
    from tests.tiny_models import make_tokenizer

    tok = make_tokenizer()
    cfg = PromptConfig(template="gemma", system="Be brief.")
    convo = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
             {"role": "user", "content": "Bye?"}]
    assert build_prompt(tok, convo, cfg) == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
        "Hello<end_of_turn>\n<start_of_turn>user\nBye?<end_of_turn>\n<start_of_turn>model\n")
    segments = render_turns(tok, convo[:2], PromptConfig(template="gemma"))
    assert segments == [("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n", False),
                        ("Hello<end_of_turn>", True)]
    assert template_stops(tok, cfg) == ("<end_of_turn>",)
    assert template_stops(tok, PromptConfig()) == ("\n### Instruction:", "### Response:", "\n\n### ")


def test_unknown_template_name_names_the_valid_ones():
    with pytest.raises(ConfigError, match="did you mean 'gemma'") as exc:
        PromptConfig.build("prompt", template="gema")
    assert "plain" in str(exc.value) and "template" in str(exc.value)
    assert set(CHAT_TEMPLATES.names()) >= {"plain", "gemma"}


def test_chat_template_tokenizer_has_no_template_stops(tiny_chat_llm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_chat_llm_dir)
    assert template_stops(tok, PromptConfig()) == ()
    assert template_stops(tok, PromptConfig(template="plain"))[0] == "\n### Instruction:"


@pytest.fixture(scope="module")
def marker_engine(tiny_llm_dir):
    """The tiny LM made to repeat one token that reads ``yes\\n\\n### Instruction:\\n``: what a base
    model does after its answer with the plain template (runs on into the next block)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llm_dir)
    tok.add_tokens(["yes\n\n### Instruction:\n"])
    tid = tok.convert_tokens_to_ids("yes\n\n### Instruction:\n")
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir, dtype=torch.float32).eval()
    model.resize_token_embeddings(len(tok))
    head = torch.nn.Linear(model.config.hidden_size, len(tok), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[tid] = 10.0
    model.lm_head = head
    model.config.tie_word_embeddings = False
    engine = BuiltinEngine(model, tok, name="marker", max_batch_size=4)
    yield engine
    engine.close()


def test_plain_template_stops_at_its_markers_and_strips_them(marker_engine, tmp_path):
    from ragtune.infer.runner import InferConfig, run_infer

    raw = marker_engine.generate(["### Instruction:\nq\n\n### Response:\n"], SamplingParams(max_tokens=4), raw=True)[0]
    assert raw.finish_reason == "length" and raw.text.count("### Instruction:") == 4   # no template: no stop
    for stop in ((), ("never-seen",)):
        done = marker_engine.generate(["q"], SamplingParams(max_tokens=4, stop=stop))[0]
        assert done.text == "yes" and done.finish_reason == "stop", stop
    (tmp_path / "eval.json").write_text(json.dumps([{"instruction": "q", "output": "yes"}]), encoding="utf-8")
    rows = run_infer(InferConfig(evalset=str(tmp_path / "eval.json"), output=str(tmp_path / "p.json"),
                                 model="unused", max_tokens=4), engine=marker_engine, show_progress=False)
    assert rows[0]["prediction"] == "yes" and rows[0]["finish_reason"] == "stop"


def test_plain_template_stops_over_the_server(marker_engine):
    from fastapi.testclient import TestClient

    from ragtune.serve.app import create_app

    client = TestClient(create_app(marker_engine), base_url="http://127.0.0.1")
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "q"}], "max_tokens": 4,
                                                  "stop": ["zzz"]})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == "yes" and choice["finish_reason"] == "stop"


def test_cli_template_escapes_are_unescaped_alike(tiny_llm_dir, tmp_path):
    from ragtune.cli import main

    assert unescape_cli(r"Q: {question}\nC: {context}\t.") == "Q: {question}\nC: {context}\t."
    assert unescape_cli(None) is None
    (tmp_path / "eval.json").write_text(json.dumps([{"context": "pump P-7", "question": "which?", "answers": "P-7"}]))
    outs = []
    for i, template in enumerate((r"Q: {question}\nC: {context}", "Q: {question}\nC: {context}")):
        out = tmp_path / f"p{i}.json"
        assert main(["infer", "--model", str(tiny_llm_dir), "--evalset", str(tmp_path / "eval.json"), "--output",
                     str(out), "--template", template, "--max-tokens", "3", "--dtype", "fp32", "--quiet"]) == 0
        outs.append(json.loads(out.read_text())[0]["prediction"])
    assert outs[0] == outs[1]
