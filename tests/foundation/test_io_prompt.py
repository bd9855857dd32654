import pytest

from ragtune.core.io import atomic_dir, atomic_write_json, new_run_id
from ragtune.core.prompt import PromptConfig, build_prompt, encode_prompt, render_turns


def test_atomic_dir_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_existing(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_json_and_run_ids_unique(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"k": "北京"})
    assert (tmp_path / "a.json").read_text(encoding="utf-8").strip().startswith('{')
    ids = {new_run_id() for _ in range(200)}
    assert len(ids) == 200


class _Tok:  # only what the prompt builder reads from a tokenizer
    eos_token, bos_token, chat_template = "<eos>", "<bos>", None


def test_plain_template_single_and_multi_turn():
    msgs = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]
    segs = render_turns(_Tok(), msgs, PromptConfig(system="Be brief."))
    assert "".join(t for t, _ in segs) == (
        "Be brief.\n\n### Instruction:\nQ1\n\n### Response:\nA1<eos>\n\n"
        "### Instruction:\nQ2\n\n### Response:\nA2<eos>")
    assert [t for t, train in segs if train] == ["A1<eos>", "A2<eos>"]


def test_inference_prompt_is_training_prefix():
    cfg = PromptConfig(system="S")
    train_text = "".join(t for t, _ in render_turns(_Tok(), [{"role": "user", "content": "Q"},
                                                             {"role": "assistant", "content": "A"}], cfg))
    infer_text = build_prompt(_Tok(), "Q", cfg)
    assert train_text == infer_text + "A<eos>"


def test_sample_system_wins_and_drop_builtin(tiny_chat_llm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_chat_llm_dir)
    msgs = [{"role": "system", "content": "own"}, {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A"}]
    text = "".join(t for t, _ in render_turns(tok, msgs, PromptConfig(system="cfg")))
    assert "own" in text and "cfg" not in text
    segs = render_turns(tok, msgs[1:], PromptConfig(drop_builtin_system=True))
    assert segs[0][0].startswith("<|system|>\n<eos>")
    assert [t for t, train in segs if train] == ["A<eos>\n"]
    # inference prompt (chat template) is a prefix of the training text
    full = "".join(t for t, _ in segs)
    assert full.startswith(build_prompt(tok, "Q", PromptConfig(drop_builtin_system=True)))


def test_encode_adds_bos_once(tiny_llm_dir, tiny_chat_llm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llm_dir)
    ids = encode_prompt(tok, "hello")
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert encode_prompt(tok, "<bos>hello").count(tok.bos_token_id) == 1


def test_atomic_files_get_normal_permissions(tmp_path):
    import os
    import stat

    atomic_write_json(tmp_path / "b.json", [])
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o666 & ~mask


def test_cli_exit_codes_from_ctx_exit_propagate():
    import click

    from ragtune import cli as cli_mod

    @click.command("failing")
    @click.pass_context
    def failing(ctx):
        ctx.exit(3)

    cli_mod.cli.add_command(failing)
    try:
        assert cli_mod.main(["failing"]) == 3
    finally:
        cli_mod.cli.commands.pop("failing", None)
