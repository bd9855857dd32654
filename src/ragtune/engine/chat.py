"""A conversation with one model, or the same conversation with several (``ragtune chat``).

- :class:`ChatSession`: the history of one conversation with one model (a :class:`ChatBackend`),
  its system prompt and sampling settings; :meth:`ChatSession.turn` sends the history plus the new
  user turn, streams the answer and appends both to the history.
- :class:`Chat`: one conversation put to several models at once (``--compare``: base vs tuned).
  Each model keeps its own history (it sees its own earlier answers, as it would in use);
  ``/reset`` and ``/system`` apply to all of them.
- Backends: :class:`EngineBackend` (an in-process engine: the prompt is rendered by the shared
  prompt builder, with the fine-tune's recorded prompt as the default) and :class:`RemoteBackend`
  (an OpenAI-compatible server: ``ragtune serve``, vLLM, any API).
- :func:`open_chat` builds a :class:`Chat` from a :class:`ChatConfig` (= the CLI flags);
  :func:`parse_line` reads one input line (a user turn or a slash command).

Library errors only here; the CLI turns them into messages.
"""
from __future__ import annotations

import abc
import queue
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from ..core.errors import ConfigError
from ..core.log import get_logger
from ..core.prompt import PromptConfig
from .base import ENGINES, EngineChoice, SamplingParams, get_engine
from .client import ServerUrl, is_http_url

log = get_logger(__name__)
Message = dict[str, str]


def _noop(_: str) -> None:
    return None


class ChatConfig(EngineChoice):
    """``ragtune chat``: which model(s) to talk to and how to sample."""

    model: str | None = Field(None, description="Local model: bundled name, dir, DIR/merged or a fine-tune output DIR.")
    adapter: str | None = Field(None, description="PEFT (LoRA) adapter dir applied on top of --model.")
    engine: str = Field("builtin", description="Engine for --model and --compare (in-process: builtin, llamacpp).")
    url: ServerUrl | None = Field(None, description="Chat with an OpenAI-compatible server instead (ragtune serve: http://127.0.0.1:8000).")
    api_key: str | None = Field(None, description="Bearer key for --url (or $RAGTUNE_API_KEY).")
    name: str | None = Field(None, description="Model name at --url (default: the server's first model); "
                             "with --model, the name shown.")
    compare: str | None = Field(None, description="A second model answering every turn too: 'base' (the fine-tune's "
                                "base model), a model (name, dir, fine-tune output) or an http(s) URL.")
    max_tokens: int = Field(256, ge=1, description="New tokens per answer.")
    temperature: float = Field(0.0, ge=0, description="0 = greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Sampling seed.")
    timeout: float = Field(300.0, gt=0, description="Seconds per answer from --url.")
    retries: int = Field(2, ge=0, description="Retries of the model lookup at --url (with backoff).")
    prompt: PromptConfig = Field(default_factory=PromptConfig,
                                 description="Prompt settings over the fine-tune's recorded ones (system, drop_builtin_system, template).")

    @model_validator(mode="after")
    def _one_target(self) -> "ChatConfig":
        if (self.model is None) == (self.url is None):
            raise ConfigError("chat with a local model or a server: give exactly one of --model and --url")
        if self.adapter is not None and self.model is None:
            raise ConfigError("--adapter applies to --model (a local model), not to --url")
        if self.compare == "base" and self.model is None:
            raise ConfigError("--compare base needs --model (a fine-tune output); give the base model "
                              "(--compare MODEL or --compare URL) with --url")
        return self

    def sampling(self) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                              seed=self.seed)


@dataclass
class Reply:
    """One answer: its text and why it ended ("stop", "length", "cancelled")."""

    label: str | None
    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ChatBackend(abc.ABC):
    """What a session talks to: one model, answering a list of messages with a stream."""

    name: str = "model"

    @abc.abstractmethod
    def stream(self, messages: Sequence[Message], params: SamplingParams,
               on_delta: Callable[[str], None]) -> Reply:
        """The answer to ``messages``; each new piece of it goes to ``on_delta`` as it is made
        (in the caller's thread)."""

    def default_system(self) -> str | None:
        """The system prompt used when the session sets none (a fine-tune's recorded one)."""
        return None

    def close(self) -> None:
        return None


class EngineBackend(ChatBackend):
    """An in-process engine (builtin, llamacpp). ``prompt``: the prompt settings sent with every
    request (default: the engine's own, i.e. the fine-tune's recorded prompt over the defaults)."""

    def __init__(self, engine: Any, prompt: PromptConfig | None = None, *, owned: bool = True):
        self.engine, self.owned = engine, owned
        self.prompt = prompt or engine.prompt
        self.name = engine.name

    def default_system(self) -> str | None:
        return self.prompt.system

    def prompt_text(self, messages: Sequence[Message]) -> str:
        """The exact text the model gets for ``messages`` (template, system prompt, history)."""
        from ..core.prompt import build_prompt

        return build_prompt(self.engine.tokenizer, list(messages), self.prompt)

    def stream(self, messages, params, on_delta) -> Reply:
        ids = self.engine.encode_chat(list(messages), self.prompt)
        params = self.engine.chat_params(params, self.prompt)
        deltas: queue.SimpleQueue[str] = queue.SimpleQueue()
        future = self.engine.submit(ids, params, on_delta=deltas.put)
        shown: list[str] = []
        try:
            while True:
                try:
                    piece = deltas.get(timeout=0.05)
                except queue.Empty:
                    if future.done():   # every delta is queued before the result is set
                        break
                    continue
                shown.append(piece)
                on_delta(piece)
            while not deltas.empty():
                piece = deltas.get_nowait()
                shown.append(piece)
                on_delta(piece)
            result = future.result()
        except BaseException:   # Ctrl-C mid-answer: the engine drops the row at its next step
            future.cancel()
            raise
        streamed = "".join(shown)
        if result.text.startswith(streamed) and len(result.text) > len(streamed):
            on_delta(result.text[len(streamed):])   # text an engine returned without streaming it
        return Reply(self.name, result.text, result.finish_reason, result.prompt_tokens, result.completion_tokens)

    def close(self) -> None:
        if self.owned:
            self.engine.close()


class RemoteBackend(ChatBackend):
    """An OpenAI-compatible server (``ragtune serve``, vLLM, any chat API), streamed."""

    def __init__(self, url: str, model: str | None = None, api_key: str | None = None, *,
                 timeout: float = 300.0, retries: int = 2):
        from .client import OnlineChatModule, api_base_url

        self.client = OnlineChatModule(base_url=api_base_url(url), model=model, api_key=api_key,
                                       timeout=timeout, retries=retries)
        self.name = self.client._model_name()   # asks /v1/models when no name was given: a wrong URL fails now

    def stream(self, messages, params, on_delta) -> Reply:
        text, finish = self.client.stream_chat(list(messages), on_delta, max_tokens=params.max_tokens,
                                               temperature=params.temperature, top_p=params.top_p,
                                               stop=list(params.stop), seed=params.seed)
        return Reply(self.name, text, finish)


class ChatSession:
    """One conversation with one model. ``system``: the system prompt sent as the first message
    (None: the backend's default, e.g. the prompt the fine-tune recorded)."""

    def __init__(self, backend: ChatBackend, *, label: str | None = None, system: str | None = None,
                 params: SamplingParams | None = None):
        self.backend, self.label = backend, label if label is not None else backend.name
        self.system = system
        self.params = params or SamplingParams(max_tokens=256)
        self.history: list[Message] = []

    def messages(self, user: str | None = None) -> list[Message]:
        """What the model gets: the system message (when set), the history, then ``user``."""
        msgs = [{"role": "system", "content": self.system}] if self.system is not None else []
        msgs += [dict(m) for m in self.history]
        if user is not None:
            msgs.append({"role": "user", "content": user})
        return msgs

    def effective_system(self) -> str | None:
        return self.system if self.system is not None else self.backend.default_system()

    def turn(self, text: str, on_delta: Callable[[str], None] | None = None) -> Reply:
        """Ask ``text``; the answer streams to ``on_delta``. History grows only when it completes
        (an interrupted answer leaves the history as it was)."""
        reply = self.backend.stream(self.messages(text), self.params, on_delta or _noop)
        reply.label = self.label
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": reply.text}]
        return reply

    def reset(self) -> None:
        self.history.clear()


class Chat:
    """The same conversation with one or more models (the first is the one under test)."""

    def __init__(self, sessions: Sequence[ChatSession]):
        if not sessions:
            raise ConfigError("a chat needs at least one model")
        self.sessions = list(sessions)

    @property
    def comparing(self) -> bool:
        return len(self.sessions) > 1

    def turn(self, text: str, on_delta: Callable[[str], None] | None = None,
             on_start: Callable[[ChatSession], None] | None = None,
             on_end: Callable[[Reply], None] | None = None) -> list[Reply]:
        """Every model answers ``text`` in turn (one after the other, so streams never interleave)."""
        replies = []
        for session in self.sessions:
            if on_start is not None:
                on_start(session)
            reply = session.turn(text, on_delta)
            if on_end is not None:
                on_end(reply)
            replies.append(reply)
        return replies

    def reset(self) -> None:
        for session in self.sessions:
            session.reset()

    def set_system(self, text: str | None) -> None:
        for session in self.sessions:
            session.system = text

    def close(self) -> None:
        for session in self.sessions:
            session.backend.close()

    def __enter__(self) -> "Chat":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- building a chat from the config -------------------------------------------------------------------
def _load_engine(cfg: ChatConfig, model: str, adapter: str | None, prompt: PromptConfig, name: str | None = None):
    engine_cls = get_engine(cfg.engine)
    if not engine_cls.in_process:
        raise ConfigError(f"engine '{cfg.engine}' runs as its own server: start it with "
                          f"`ragtune serve --engine {cfg.engine} --model {model}` and chat with --url",
                          hint="in-process engines: " + ", ".join(n for n, e in ENGINES.items() if e.in_process))
    return engine_cls.load(model, adapter, settings=cfg.settings, prompt=prompt, name=name)


def _compare_backend(cfg: ChatConfig, first: ChatBackend) -> tuple[ChatBackend, str | None]:
    """The --compare model, and the first model's label when that makes the pair clearer."""
    from ..models.source import finetune_base

    ref = str(cfg.compare)
    if is_http_url(ref):
        return RemoteBackend(ref, None, cfg.api_key, timeout=cfg.timeout, retries=cfg.retries), None
    if ref != "base":
        return EngineBackend(_load_engine(cfg, ref, None, cfg.prompt)), None
    assert cfg.model is not None   # ChatConfig checked it
    base = finetune_base(cfg.adapter or cfg.model)
    if base is None:
        raise ConfigError(f"--compare base: {cfg.adapter or cfg.model} is not a fine-tune output "
                          "(no ragtune_finetune.json, no adapter_config.json), so it has no base model",
                          hint="name the model to compare with: --compare MODEL")
    # the base gets the prompt the tuned model gets (the fine-tune's recorded one): same input, so
    # the difference in the answers is what training changed
    prompt = first.prompt if isinstance(first, EngineBackend) else cfg.prompt
    log.info("--compare base: %s, with the tuned model's prompt (template=%s, system=%r)", base,
             prompt.template, prompt.system)
    return EngineBackend(_load_engine(cfg, base, None, prompt)), "tuned"


def _initial_system(cfg: ChatConfig, backend: ChatBackend) -> str | None:
    """An engine got --system with its prompt settings (None: nothing to add); a server does not
    know them, so the client sends --system (or the empty one of --drop-builtin-system)."""
    if isinstance(backend, EngineBackend):
        return None
    if cfg.prompt.system is not None:
        return cfg.prompt.system
    return "" if cfg.prompt.drop_builtin_system else None


def open_chat(cfg: ChatConfig) -> Chat:
    """Load or reach the model(s) of ``cfg``: --model (an in-process engine) or --url, plus --compare."""
    params = cfg.sampling()
    first: ChatBackend
    if cfg.url is not None:
        first = RemoteBackend(cfg.url, cfg.name, cfg.api_key, timeout=cfg.timeout, retries=cfg.retries)
    else:
        assert cfg.model is not None
        first = EngineBackend(_load_engine(cfg, cfg.model, cfg.adapter, cfg.prompt, cfg.name))
    sessions = [ChatSession(first, system=_initial_system(cfg, first), params=params)]
    if cfg.compare is not None:
        try:
            other, first_label = _compare_backend(cfg, first)
        except BaseException:
            first.close()
            raise
        second_label = "base" if cfg.compare == "base" else other.name
        if first_label is None and other.name == first.name:
            first_label, second_label = f"1: {first.name}", f"2: {other.name}"
        if first_label is not None:
            sessions[0].label = first_label
        sessions.append(ChatSession(other, label=second_label, system=_initial_system(cfg, other), params=params))
    return Chat(sessions)


# -- one input line ----------------------------------------------------------------------------------------
Action = Literal["say", "reset", "system", "quit", "help", "empty"]
COMMANDS: dict[str, str] = {
    "/reset": "forget the conversation so far",
    "/system [TEXT]": "set the system prompt (without TEXT: show it)",
    "/help": "this list",
    "/quit": "end (so do Ctrl-D and Ctrl-C)",
}


def parse_line(line: str) -> tuple[Action, str | None]:
    """``("say", text)`` for a user turn, ``(command, argument)`` for a slash command. A line that
    starts with ``//`` is a user turn starting with ``/``. Unknown commands raise ConfigError."""
    text = line.rstrip("\r\n")
    if not text.strip():
        return "empty", None
    if text.startswith("//"):
        return "say", text[1:]
    if not text.startswith("/"):
        return "say", text
    head, _, arg = text.strip().partition(" ")
    command = head[1:].lower()
    if command in ("quit", "exit", "q"):
        return "quit", None
    if command == "reset":
        return "reset", None
    if command == "help":
        return "help", None
    if command == "system":
        return "system", arg.strip() or None
    raise ConfigError(f"unknown command {head}; commands: " + ", ".join(c.split()[0] for c in COMMANDS),
                      hint="start a line with // to send a message that begins with /")
