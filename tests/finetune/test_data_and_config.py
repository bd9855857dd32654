"""Config, data reading, prompt rendering and the errors raised before any model is loaded."""
from __future__ import annotations

import json

import pytest

from ragtune.core.errors import ConfigError, DataError


# -- config ---------------------------------------------------------------------------------------------
def test_unknown_key_names_it_and_the_valid_keys():
    import ragtune as rt

    with pytest.raises(ConfigError) as exc:
        rt.finetune.lora(learning_rat=1e-4)
    msg = str(exc.value)
    assert "learning_rat" in msg and "did you mean 'learning_rate'" in msg and "cutoff_len" in msg


@pytest.mark.parametrize(("other_tools_key", "ours"), [
    ("base_model", "base"), ("model_name_or_path", "base"), ("output_dir", "output"), ("train_file", "train")])
def test_keys_of_other_tools_point_to_ragtunes_names(other_tools_key, ours):
    """HF Trainer / LLaMA-Factory spellings are errors (one vocabulary) that name ragtune's key."""
    import ragtune as rt

    for method in (rt.finetune.lora, rt.finetune.embedding):
        with pytest.raises(ConfigError, match=f"'{other_tools_key}'.*did you mean '{ours}'"):
            method.config(**{other_tools_key: "x"})


def test_method_specific_keys_are_checked():
    import ragtune as rt

    with pytest.raises(ConfigError, match="lora_rank.*does not apply|lora_rank do"):
        rt.finetune.freeze(lora_rank=4)
    with pytest.raises(ConfigError, match="freeze_trainable_layers"):
        rt.finetune.lora(freeze_trainable_layers=1)
    cfg = rt.finetune.freeze(freeze_trainable_layers=1).cfg
    assert cfg.method == "freeze" and cfg.freeze_trainable_layers == 1


def test_registry_and_defaults():
    import ragtune as rt

    assert [rt.finetune.get_method(n).name for n in ("lora", "freeze", "full", "llamafactory")] == [
        "lora", "freeze", "full", "llamafactory"]
    with pytest.raises(ConfigError, match="unknown fine-tune method 'qlora'.*"):
        rt.finetune.get_method("qlora")
    cfg = rt.finetune.lora.config()
    assert (cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target, cfg.max_samples) == (8, 16, 0.0, "all", None)
    assert rt.finetune.lora.config(lora_target="q_proj, v_proj").lora_target == ["q_proj", "v_proj"]


def test_yaml_and_overrides(tmp_path):
    from ragtune.core.config import deep_merge, load_yaml_mapping, nest
    from ragtune.finetune import finetune_config

    y = tmp_path / "job.yaml"
    y.write_text("method: lora\nlearning_rate: 2.0e-4\nlora_rank: 4\nprompt: {system: S}\n")
    cfg = finetune_config(deep_merge(load_yaml_mapping(y), nest({"learning_rate": "5e-4", "cutoff_len": None,
                                                                  "prompt__template": "plain"})), str(y))
    assert cfg.learning_rate == 5e-4 and cfg.lora_rank == 4 and cfg.cutoff_len == 1024
    assert (cfg.prompt.system, cfg.prompt.template) == ("S", "plain")     # flags merge into nested sections
    y.write_text("lora_rnak: 4\n")
    with pytest.raises(ConfigError, match="lora_rnak.*did you mean 'lora_rank'"):
        finetune_config(load_yaml_mapping(y), str(y))
    with pytest.raises(ConfigError, match="prompt.sytem.*did you mean 'system'"):
        finetune_config({"method": "freeze", "prompt": {"sytem": "x"}})


# -- data -----------------------------------------------------------------------------------------------
def test_alpaca_and_messages_to_conversations(tmp_path):
    from ragtune.finetune.llm.data import load_conversations

    rows = [{"instruction": "Q1", "input": "ctx", "output": "A1", "system": "S",
             "history": [["h-user", "h-bot"]]}, {"instruction": "Q2", "output": "A2"}]
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    convs = load_conversations(f)
    assert convs[0] == [{"role": "system", "content": "S"}, {"role": "user", "content": "h-user"},
                        {"role": "assistant", "content": "h-bot"}, {"role": "user", "content": "Q1\nctx"},
                        {"role": "assistant", "content": "A1"}]
    assert convs[1][1] == {"role": "assistant", "content": "A2"}
    assert len(load_conversations(f, max_samples=1)) == 1
    m = tmp_path / "m.json"   # messages files, a UTF-8 BOM and a {"data": [...]} wrapper: as `data validate`
    m.write_text("\ufeff" + json.dumps({"data": [{"messages": [{"role": "user", "content": "Q2"},
                                                              {"role": "assistant", "content": "A2"}]}]}))
    assert load_conversations(m)[0][1] == {"role": "assistant", "content": "A2"}


@pytest.mark.parametrize("content, match", [
    ("", "file .*d.json: the training file holds no records"),
    ("[", "not valid JSON"),
    ("[]", "holds no records"),
    ('[{"instruction": "q", "output": "a"}, {"instruction": "q"}]', "record 1, field 'output'.*required field is missing"),
    ('[{"question": "q"}]', "record 0: .*neither Alpaca"),
    ('[{"messages": [{"role": "bot", "content": "x"}]}]', r"record 0, field 'messages\[0\].role'.*unknown role"),
    ('[{"messages": [{"role": "user", "content": "x"}]}]', "must end with an assistant answer"),
    # what `data validate` rejects, training rejects too (one validator)
    ('[{"instruction": "q", "output": "a"}, {"instruction": "q", "output": "a"}]', "record 1.*duplicate of record 0"),
    ('[{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]}]', "expected 'user'"),
    ('[{"instruction": "q", "output": "a", "system": 3}]', "field 'system'.*must be a string"),
    ('[{"instruction": "q", "output": "a"}, {"messages": [{"role": "user", "content": "q"}, '
     '{"role": "assistant", "content": "a"}]}]', "record 1.*messages but the file is alpaca"),
])
def test_bad_training_files(tmp_path, content, match):
    from ragtune.finetune.llm.data import load_conversations

    f = tmp_path / "d.json"
    f.write_text(content)
    with pytest.raises(DataError, match=match):
        load_conversations(f)


def test_missing_file():
    from ragtune.finetune.llm.data import load_conversations

    with pytest.raises(DataError, match="does not exist"):
        load_conversations("/nonexistent/train.json")


def test_training_text_is_the_serving_prompt_plus_answer(tiny_llm_dir, tiny_chat_llm_dir):
    """The tokens before the first answer token are exactly what build_prompt gives at inference,
    with and without a chat template, with system / drop_builtin_system honoured."""
    from transformers import AutoTokenizer

    from ragtune.core.prompt import PromptConfig, build_prompt, encode_prompt
    from ragtune.finetune.llm.data import IGNORE, tokenize_conversation

    for model_dir in (tiny_llm_dir, tiny_chat_llm_dir):
        tok = AutoTokenizer.from_pretrained(model_dir)
        for pcfg in (PromptConfig(), PromptConfig(system="Be brief."), PromptConfig(drop_builtin_system=True)):
            msgs = [{"role": "user", "content": "what is the serial"}, {"role": "assistant", "content": "AB12"}]
            s = tokenize_conversation(tok, msgs, pcfg, 512)
            first = next(i for i, lab in enumerate(s.labels) if lab != IGNORE)
            assert s.input_ids[:first] == encode_prompt(tok, build_prompt(tok, msgs[:1], pcfg))
            answer = tok.decode([t for t in s.labels if t != IGNORE])
            # the plain template ends an answer with EOS; a chat template with its own turn end
            assert answer.rstrip("\n") == "AB12" + tok.eos_token


def test_multi_turn_trains_on_assistant_turns_only(tiny_chat_llm_dir):
    from transformers import AutoTokenizer

    from ragtune.core.prompt import PromptConfig
    from ragtune.finetune.llm.data import IGNORE, tokenize_conversation

    tok = AutoTokenizer.from_pretrained(tiny_chat_llm_dir)
    msgs = [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "first"},
            {"role": "user", "content": "u2"}, {"role": "assistant", "content": "second"}]
    s = tokenize_conversation(tok, msgs, PromptConfig(), 512)
    spans, cur = [], []
    for t, lab in zip(s.input_ids, s.labels):
        if lab != IGNORE:
            cur.append(t)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    if cur:
        spans.append(tok.decode(cur))
    assert [sp.replace(tok.eos_token, "").strip() for sp in spans] == ["first", "second"]


def test_prompt_longer_than_cutoff_is_an_error(tiny_llm_dir):
    from transformers import AutoTokenizer

    from ragtune.core.prompt import PromptConfig
    from ragtune.finetune.llm.data import tokenize_conversation

    tok = AutoTokenizer.from_pretrained(tiny_llm_dir)
    msgs = [{"role": "user", "content": "pump valve " * 40}, {"role": "assistant", "content": "x"}]
    with pytest.raises(DataError, match=r"record 3: the prompt alone is \d+ tokens, longer than cutoff_len=16"):
        tokenize_conversation(tok, msgs, PromptConfig(), 16, file="f.json", record=3)
    s = tokenize_conversation(tok, [msgs[0], {"role": "assistant", "content": "long answer " * 100}], PromptConfig(), 256)
    assert len(s.input_ids) == 256  # answers are cut at cutoff_len, prompts never


def test_tokenization_cache_hits_and_invalidates(tiny_llm_dir, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from ragtune.core.prompt import PromptConfig
    from ragtune.finetune.llm import data

    tok = AutoTokenizer.from_pretrained(tiny_llm_dir)
    f = tmp_path / "t.json"
    f.write_text(json.dumps([{"instruction": f"q{i}", "output": "a"} for i in range(3)]))
    first, total = data.tokenized_dataset(f, tok, tiny_llm_dir, PromptConfig(), 64)
    assert total == 3
    calls = []
    original = data.tokenize_conversation
    monkeypatch.setattr(data, "tokenize_conversation", lambda *a, **k: calls.append(1) or original(*a, **k))
    again, _ = data.tokenized_dataset(f, tok, tiny_llm_dir, PromptConfig(), 64)
    assert calls == [] and [s.input_ids for s in again] == [s.input_ids for s in first]
    other, _ = data.tokenized_dataset(f, tok, tiny_llm_dir, PromptConfig(system="x"), 64)  # new key
    assert len(calls) == 3 and len(other[0]) > len(first[0])
    f.write_text(json.dumps([{"instruction": f"q{i}", "output": "b"} for i in range(3)]))  # data changed
    data.tokenized_dataset(f, tok, tiny_llm_dir, PromptConfig(), 64)
    assert len(calls) == 6


def test_errors_come_before_the_model_loads(tiny_llm_dir, tmp_path, monkeypatch):
    """Bad target / bad data / bad cutoff: raised without reading weights (from_pretrained)."""
    import transformers

    import ragtune as rt

    def boom(*a, **k):
        raise AssertionError("model weights were loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"instruction": "q", "output": "a"}]))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "q"}]))
    with pytest.raises(ConfigError, match=r"(?s)lora_target \['qq_proj'\] match.*valid: all, .*q_proj"):
        rt.finetune.lora.run(str(tiny_llm_dir), str(good), str(tmp_path / "o1"), lora_target=["qq_proj"])
    with pytest.raises(DataError, match="record 0, field 'output'"):
        rt.finetune.lora.run(str(tiny_llm_dir), str(bad), str(tmp_path / "o2"))
    with pytest.raises(ConfigError, match="freeze_trainable_layers=5 but the model has 2 layers"):
        rt.finetune.freeze.run(str(tiny_llm_dir), str(good), str(tmp_path / "o3"), freeze_trainable_layers=5)
    long = tmp_path / "long.json"
    long.write_text(json.dumps([{"instruction": "pump " * 100, "output": "a"}]))
    with pytest.raises(DataError, match="cutoff_len=32"):
        rt.finetune.lora.run(str(tiny_llm_dir), str(long), str(tmp_path / "o4"), cutoff_len=32)
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3", "o4"))
