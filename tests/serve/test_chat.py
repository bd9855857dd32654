"""`ragtune chat` (issue 19): a piped multi-turn session through the real CLI, history, /reset,
/system, --compare base (base vs tuned), --url against a real `ragtune serve` app, errors."""
from __future__ import annotations

import io
import json
import shutil

import pytest

pytest.importorskip("torch")

from ragtune.cli import main
from ragtune.core.errors import ConfigError
from ragtune.engine.chat import ChatConfig, ChatSession, EngineBackend, RemoteBackend, parse_line

MAX = "6"


def _chat(monkeypatch, capsys, args: list[str], stdin: str) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    rc = main(["chat", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def finetune_dir(readable_llm_dir, tiny_llm_dir, tmp_path_factory):
    """A fine-tune output as `ragtune finetune` leaves it: merged/ weights, the manifest naming the
    base model, and the recorded prompt (a system prompt the chat must reuse)."""
    from transformers import AutoTokenizer

    from ragtune.core.prompt import PromptConfig, write_recorded_prompt

    out = tmp_path_factory.mktemp("chat_ft") / "run1"
    shutil.copytree(readable_llm_dir, out / "merged")
    (out / "ragtune_finetune.json").write_text(json.dumps({"base_model": str(tiny_llm_dir)}))
    write_recorded_prompt(out, AutoTokenizer.from_pretrained(readable_llm_dir), PromptConfig(system="Be brief."))
    return out


def _greedy(engine, messages, max_tokens: int = int(MAX)) -> str:
    from ragtune.engine.base import SamplingParams

    return EngineBackend(engine, owned=False).stream(messages, SamplingParams(max_tokens=max_tokens),
                                                     lambda _: None).text


def test_session_history_reset_and_system(llm_engine):
    from ragtune.engine.base import SamplingParams

    backend = EngineBackend(llm_engine, owned=False)
    session = ChatSession(backend, params=SamplingParams(max_tokens=int(MAX)))
    pieces: list[str] = []
    first = session.turn("where is the pump", pieces.append)
    assert first.text and "".join(pieces) == first.text          # streamed piece by piece, all of it
    assert len(pieces) > 1
    # the second turn's prompt holds the first question and answer
    prompt = backend.prompt_text(session.messages("and the valve"))
    assert "where is the pump" in prompt and first.text in prompt and prompt.endswith("### Response:\n")
    second = session.turn("and the valve")
    assert [m["role"] for m in session.history] == ["user", "assistant", "user", "assistant"]
    assert second.text == _greedy(llm_engine, session.messages()[:3])   # the answer given that history
    session.reset()
    assert session.history == [] and "where is the pump" not in backend.prompt_text(session.messages("x"))
    session.system = "You answer in one word."
    assert backend.prompt_text(session.messages("x")).startswith("You answer in one word.\n\n")


def test_piped_session_through_the_cli(monkeypatch, capsys, readable_llm_dir, llm_engine):
    stdin = "where is the pump\nand the valve\n/reset\nwhere is the pump\n/system Reply tersely.\nwhere is the pump\n/quit\nnever asked\n"
    rc, out, err = _chat(monkeypatch, capsys, ["--model", str(readable_llm_dir), "--dtype", "fp32",
                                               "--max-tokens", MAX], stdin)
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 4 and "> " not in out and "[" not in out      # only the answers on stdout
    q1 = [{"role": "user", "content": "where is the pump"}]
    a1 = _greedy(llm_engine, q1)
    a2 = _greedy(llm_engine, [*q1, {"role": "assistant", "content": a1}, {"role": "user", "content": "and the valve"}])
    a_sys = _greedy(llm_engine, [{"role": "system", "content": "Reply tersely."}, *q1])
    assert lines[0] == a1 and lines[1] == a2
    assert lines[2] == a1                                               # /reset: the same question, no history
    assert lines[3] == a_sys                                            # /system: the new system prompt
    assert "conversation cleared" in err and "system prompt set" in err


def test_eof_ends_cleanly_and_unknown_commands_are_messages(monkeypatch, capsys, readable_llm_dir):
    rc, out, err = _chat(monkeypatch, capsys, ["--model", str(readable_llm_dir), "--max-tokens", "2"],
                         "/bogus\n//slash text\n")
    assert rc == 0 and "unknown command /bogus" in err and "Traceback" not in err
    assert len(out.splitlines()) == 1                                   # "//slash text" was a turn
    assert parse_line("//x") == ("say", "/x") and parse_line("/system  Hi there ") == ("system", "Hi there")
    assert parse_line("   \n") == ("empty", None) and parse_line("/exit")[0] == "quit"


def test_compare_base_labels_both_answers_and_reuses_the_recorded_prompt(monkeypatch, capsys, finetune_dir,
                                                                           tiny_llm_dir):
    rc, out, err = _chat(monkeypatch, capsys, ["--model", str(finetune_dir), "--compare", "base",
                                               "--max-tokens", MAX], "where is the pump\n")
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("[tuned] ") and lines[1].startswith("[base] ")
    # said at INFO (stderr): the recorded prompt is reused, and the base model gets it too
    assert "using the prompt recorded with the fine-tune" in err and "system='Be brief.'" in err
    assert f"--compare base: {tiny_llm_dir}" in err and "'Be brief.'" in err.split("--compare base:")[1]


def test_compare_base_needs_a_finetune(monkeypatch, capsys, readable_llm_dir):
    rc, _, err = _chat(monkeypatch, capsys, ["--model", str(readable_llm_dir), "--compare", "base"], "hi\n")
    assert rc == 1 and "is not a fine-tune output" in err and "Traceback" not in err


def test_url_chats_with_a_running_server(monkeypatch, capsys, llm_server, llm_engine):
    stdin = "where is the pump\nand the valve\n"
    rc, out, err = _chat(monkeypatch, capsys, ["--url", llm_server.url, "--max-tokens", MAX], stdin)
    assert rc == 0, err
    q1 = [{"role": "user", "content": "where is the pump"}]
    a1 = _greedy(llm_engine, q1)
    a2 = _greedy(llm_engine, [*q1, {"role": "assistant", "content": a1}, {"role": "user", "content": "and the valve"}])
    assert out.splitlines() == [a1, a2]     # streamed over HTTP, the same answers, history sent along
    backend = RemoteBackend(llm_server.url + "/v1")
    assert backend.name == llm_engine.name  # the server's model from /v1/models


@pytest.mark.parametrize(("args", "expected"), [
    (["--model", "{tmp}/no-such-model"], "no-such-model"),
    (["--max-tokens", "0", "--model", "x"], "max_tokens"),
    (["--temperature", "-1", "--model", "x"], "temperature"),
    (["--url", "ftp://x"], "not an http(s) URL"),
    ([], "exactly one of --model and --url"),
    (["--url", "http://127.0.0.1:9/v1", "--retries", "0"], "127.0.0.1:9"),
])
def test_bad_input_is_a_message(monkeypatch, capsys, tmp_path, args, expected):
    rc, _, err = _chat(monkeypatch, capsys, [a.replace("{tmp}", str(tmp_path)) for a in args], "hi\n")
    assert rc != 0 and expected in err and "Traceback" not in err


def test_config_rules():
    with pytest.raises(ConfigError, match="--compare base needs --model"):
        ChatConfig.build("chat", url="http://127.0.0.1:8000", compare="base")
    with pytest.raises(ConfigError, match="--adapter applies to --model"):
        ChatConfig.build("chat", url="http://127.0.0.1:8000", adapter="a")
    assert ChatConfig(model="m", dtype="fp32").settings.dtype == "fp32"   # engine flags routed


def test_the_ui_chat_streams_through_the_same_parser(llm_server, llm_engine):
    """The web chat's remote path reads the stream with engine.client.parse_stream_line too."""
    import asyncio

    from ragtune.engine.client import parse_stream_line
    from ragtune.ui.playground import ChatRequest, Playground, chat_events

    async def collect() -> list[dict]:
        req = ChatRequest.build("chat", target={"kind": "remote", "url": llm_server.url + "/v1"},
                                messages=[{"role": "user", "content": "where is the pump"}], max_tokens=int(MAX))
        return [json.loads(e[5:]) async for e in chat_events(Playground(), req)]

    events = asyncio.run(collect())
    text = "".join(e.get("delta", "") for e in events)
    assert text == _greedy(llm_engine, [{"role": "user", "content": "where is the pump"}]) and events[-1].get("done")
    assert parse_stream_line(": comment") is None and parse_stream_line("data: [DONE]").done
    with pytest.raises(Exception, match="boom"):
        parse_stream_line('data: {"error": {"message": "boom"}}')


def test_a_failed_turn_is_reported_and_the_chat_goes_on(monkeypatch, capsys, readable_llm_dir):
    long_turn = "where is the pump " * 20
    rc, out, err = _chat(monkeypatch, capsys, ["--model", str(readable_llm_dir), "--max-model-len", "48",
                                               "--max-tokens", "4"], f"{long_turn}\nhi\n")
    assert rc == 1 and "context limit" in err and "Traceback" not in err
    assert len(out.splitlines()) == 1 and out.strip()   # no blank line for the failed turn; the next one answered
