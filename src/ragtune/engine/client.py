"""LLM clients a RAG pipeline calls like a function: ``llm("question")`` -> str.

- :class:`OnlineChatModule`: any OpenAI-compatible API (a ``ragtune serve`` / vLLM server, OpenAI,
  DeepSeek, Qwen/DashScope, ...) over httpx, with retries and backoff.
- :class:`LocalLLM`: the builtin engine in this process (no HTTP).

Both take a string (one user turn) or a list of messages, both have ``.prompt(system=...)`` and
``.batch([...])``; so a local fine-tuned model and a remote baseline are interchangeable.
"""
from __future__ import annotations

import abc
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator

from ..core.errors import BackendError, ConfigError
from ..core.log import get_logger
from ..core.prompt import ChatPrompter, PromptConfig

if TYPE_CHECKING:
    from typing import Self  # Python 3.11+; only for annotations here (3.10 is supported)

log = get_logger(__name__)

# source name -> (base URL, env var holding the key, default model)
SOURCES: dict[str, tuple[str, str, str | None]] = {
    "openai": ("https://api.openai.com/v1", "OPENAI_API_KEY", "gpt-4o-mini"),
    "deepseek": ("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", "deepseek-chat"),
    "qwen": ("https://dashscope.aliyuncs.com/compatible-mode/v1", "DASHSCOPE_API_KEY", "qwen-plus"),
    "ragtune": ("http://127.0.0.1:8000/v1", "RAGTUNE_API_KEY", None),
}
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def api_base_url(url: str) -> str:
    """A server's URL as the OpenAI API base: ``http://host:8000`` means ``http://host:8000/v1``;
    a URL with a path (``.../v1``, ``.../compatible-mode/v1``) is kept as it is."""
    from urllib.parse import urlparse

    url = url.rstrip("/")
    return url + "/v1" if urlparse(url).path in ("", "/") else url


@dataclass(frozen=True)
class StreamEvent:
    """One ``data:`` line of an OpenAI chat-completions stream: new answer text, the finish
    reason when this chunk has one, ``done`` at ``[DONE]``."""

    text: str = ""
    finish_reason: str | None = None
    done: bool = False


def parse_stream_line(line: str, where: str = "the server") -> StreamEvent | None:
    """A line of a ``stream: true`` chat-completions response (server-sent events): None for what
    is not a ``data:`` line (blank separators, comments); an in-stream error chunk raises
    :class:`BackendError` with the server's message. Used by ``ragtune chat`` and the UI's chat."""
    import json

    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return StreamEvent(done=True)
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError:
        raise BackendError(f"{where} sent a stream line that is not JSON: {data[:200]!r}") from None
    if not isinstance(chunk, dict):
        raise BackendError(f"{where} sent a stream chunk that is not a JSON object: {data[:200]!r}")
    if "error" in chunk:
        err = chunk["error"]
        raise BackendError(f"{where}: {err.get('message', err) if isinstance(err, dict) else err}")
    choice = (chunk.get("choices") or [{}])[0]
    return StreamEvent((choice.get("delta") or {}).get("content") or "", choice.get("finish_reason"))


def _as_messages(x: str | Sequence[dict[str, str]]) -> list[dict[str, str]]:
    if isinstance(x, str):
        return [{"role": "user", "content": x}]
    msgs = list(x)
    if not msgs or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
        raise ConfigError("an LLM input must be a string or a list of {'role', 'content'} messages")
    return [dict(m) for m in msgs]


class _ChatModel(abc.ABC):
    """Shared call interface."""

    def __init__(self, max_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                 stop: Sequence[str] | None = None, seed: int | None = None):
        self.defaults = dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                             stop=list(stop or []), seed=seed)
        self.prompt_cfg = PromptConfig()

    def prompt(self, system: Any = None, drop_builtin_system: bool | None = None) -> "Self | PromptedLLM":
        """``llm.prompt("You are ...")`` or ``llm.prompt(dict(system=..., drop_builtin_system=True))``;
        returns ``self`` (fluent). A RAG prompter (``rt.ChatPrompter(instruction, extra_keys=[...])``)
        returns a wrapped LLM that turns the pipeline's ``{context_str, query}`` into messages."""
        if hasattr(system, "messages") and hasattr(system, "extra_keys"):
            return PromptedLLM(self, system)
        cfg = PromptConfig.coerce(system)
        if drop_builtin_system is not None:
            cfg = cfg.model_copy(update={"drop_builtin_system": drop_builtin_system})
        self.prompt_cfg = cfg
        return self

    def _settings(self, overrides: dict[str, Any]) -> dict[str, Any]:
        unknown = set(overrides) - set(self.defaults)
        if unknown:
            raise ConfigError(f"unknown generation setting(s) {sorted(unknown)}; valid: {', '.join(self.defaults)}")
        return {**self.defaults, **overrides}

    def __call__(self, x: str | Sequence[dict[str, str]], **overrides: Any) -> str:
        return self.batch([x], **overrides)[0]

    @abc.abstractmethod
    def batch(self, inputs: Sequence[str | Sequence[dict[str, str]]], **overrides: Any) -> list[str]:
        """One completion per input (a user turn or a message list), in input order."""


class OnlineChatModule(_ChatModel):
    """Client for an OpenAI-compatible chat API.

    >>> llm = OnlineChatModule(source="deepseek")                      # key from $DEEPSEEK_API_KEY
    >>> llm = OnlineChatModule(base_url="http://127.0.0.1:8000/v1")    # a ragtune/vLLM server
    >>> llm.prompt("You are a helpful assistant.")("Where is Furong Cave?")
    """

    def __init__(self, base_url: str | None = None, model: str | None = None, api_key: str | None = None, *,
                 source: str | None = None, timeout: float = 120.0, retries: int = 4, backoff: float = 0.5,
                 concurrency: int = 8, **defaults: Any):
        super().__init__(**defaults)
        if source is not None and source not in SOURCES:
            raise ConfigError(f"unknown source {source!r}; valid: {', '.join(SOURCES)} (or pass base_url=)")
        if source:
            url, env, default_model = SOURCES[source]
        else:  # a ragtune/vLLM server: $RAGTUNE_BASE_URL or localhost:8000, key from $RAGTUNE_API_KEY
            url, env, default_model = SOURCES["ragtune"]
            url = os.environ.get("RAGTUNE_BASE_URL") or url
        self.base_url = (base_url or url).rstrip("/")
        self.api_key = api_key or (os.environ.get(env) if env else None) or os.environ.get("RAGTUNE_API_KEY")
        self.model = model or default_model
        self.timeout, self.retries, self.backoff, self.concurrency = timeout, retries, backoff, concurrency
        self._local = threading.local()
        self._model_lock = threading.Lock()

    # -- HTTP ---------------------------------------------------------------------------------------
    def _client(self):
        import httpx

        client = getattr(self._local, "client", None)
        if client is None:  # one connection pool per thread: httpx.Client is not shared across threads
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            client = self._local.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout)
        return client

    def _model_name(self) -> str:
        with self._model_lock:  # one probe, not one per thread of a concurrent fan-out
            if self.model is None:  # ask the server what it serves (ragtune / vLLM serve one model)
                data = self.request("GET", "/models")["data"]
                if not data:
                    raise BackendError(f"{self.base_url}/models lists no model; pass model=")
                self.model = data[0]["id"]
        return self.model

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        """One API call with retries (connection errors, 429, 5xx) and exponential backoff + jitter;
        4xx errors are raised at once with the server's message."""
        import httpx

        last = ""
        for attempt in range(self.retries + 1):
            try:
                resp = self._client().request(method, path, json=body)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code < 400:
                    return resp.json()
                last = f"HTTP {resp.status_code}: {_error_message(resp)}"
                if resp.status_code not in RETRY_STATUS:
                    raise BackendError(f"{self.base_url}{path} rejected the request: {last}")
            if attempt < self.retries:
                delay = self.backoff * 2 ** attempt * (1 + random.random() * 0.25)
                log.info("%s%s failed (%s); retry %d/%d in %.1fs", self.base_url, path, last, attempt + 1,
                         self.retries, delay)
                time.sleep(delay)
        raise BackendError(f"{self.base_url}{path} failed after {self.retries + 1} attempts: {last}")

    # -- calls --------------------------------------------------------------------------------------
    def _body(self, settings: dict[str, Any]) -> dict[str, Any]:
        body = {"model": self._model_name(), "max_tokens": settings["max_tokens"],
                "temperature": settings["temperature"], "top_p": settings["top_p"]}
        if settings["stop"]:
            body["stop"] = settings["stop"]
        if settings["seed"] is not None:
            body["seed"] = settings["seed"]
        return body

    def _messages(self, x: str | Sequence[dict[str, str]]) -> list[dict[str, str]]:
        messages = _as_messages(x)
        if messages[0]["role"] != "system" and (self.prompt_cfg.system is not None or self.prompt_cfg.drop_builtin_system):
            messages.insert(0, {"role": "system", "content": self.prompt_cfg.system or ""})
        return messages

    def chat(self, x: str | Sequence[dict[str, str]], **overrides: Any) -> dict:
        """The full response JSON of ``/chat/completions``."""
        return self.request("POST", "/chat/completions", {**self._body(self._settings(overrides)),
                                                          "messages": self._messages(x)})

    def stream_chat(self, x: str | Sequence[dict[str, str]], on_delta: Callable[[str], None],
                    **overrides: Any) -> tuple[str, str | None]:
        """``/chat/completions`` with ``stream: true``: ``on_delta`` gets each piece of the answer as
        it arrives; returns (the whole answer, finish_reason). Not retried once the request is
        sent (part of the answer may have been shown); the model name lookup is."""
        import httpx

        body = {**self._body(self._settings(overrides)), "messages": self._messages(x), "stream": True}
        where = f"{self.base_url}/chat/completions"
        pieces: list[str] = []
        finish: str | None = None
        try:
            with self._client().stream("POST", "/chat/completions", json=body) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise BackendError(f"{where} rejected the request: HTTP {resp.status_code}: {_error_message(resp)}")
                for line in resp.iter_lines():
                    event = parse_stream_line(line, where)
                    if event is None:
                        continue
                    if event.done:
                        break
                    if event.text:
                        pieces.append(event.text)
                        on_delta(event.text)
                    finish = event.finish_reason or finish
        except httpx.HTTPError as exc:
            raise BackendError(f"{where} failed: {type(exc).__name__}: {exc}") from None
        return "".join(pieces), finish

    def completion(self, prompt: str, **overrides: Any) -> dict:
        """The full response JSON of ``/completions`` (raw prompt, no chat template)."""
        return self.request("POST", "/completions", {**self._body(self._settings(overrides)), "prompt": prompt})

    def complete(self, prompt: str, **overrides: Any) -> str:
        return self.completion(prompt, **overrides)["choices"][0]["text"]

    def batch(self, inputs, **overrides: Any) -> list[str]:
        from concurrent.futures import ThreadPoolExecutor

        def one(x):
            data = self.chat(x, **overrides)
            return data["choices"][0]["message"]["content"] or ""

        if len(inputs) == 1:
            return [one(inputs[0])]
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(one, inputs))

    def __repr__(self) -> str:
        return f"OnlineChatModule(base_url={self.base_url!r}, model={self.model!r})"


def _error_message(resp) -> str:
    try:
        return resp.json()["error"]["message"]
    except Exception:
        return resp.text[:300]


class LocalLLM(_ChatModel):
    """The builtin engine in-process: ``LocalLLM.load("gemma-3-270m")("Hello")``. Inputs of one
    ``batch`` call run as batched generate calls."""

    def __init__(self, engine: Any, prompt: Any = None, **defaults: Any):
        super().__init__(**defaults)
        self.engine = engine
        # This client's own prompt settings, passed with every request: the engine's prompt is only
        # the default, so two clients of one engine never see each other's system prompt.
        self.prompt_cfg = PromptConfig.coerce(prompt).over(engine.prompt) if prompt is not None else engine.prompt

    @classmethod
    def load(cls, model: str, adapter: str | None = None, *, dtype: str = "auto", device: str | None = None,
             max_batch_size: int = 16, **defaults: Any) -> "LocalLLM":
        from .builtin import BuiltinEngine

        return cls(BuiltinEngine.load(model, adapter, dtype=dtype, device=device, max_batch_size=max_batch_size),
                   **defaults)

    def prompt(self, system: Any = None, drop_builtin_system: bool | None = None) -> "LocalLLM | PromptedLLM":
        wrapped = super().prompt(system, drop_builtin_system)
        if wrapped is not self:                   # a RAG prompter wraps this client
            return wrapped
        self.prompt_cfg = self.prompt_cfg.over(self.engine.prompt)  # unset keys: the engine's default
        return self

    def batch(self, inputs, **overrides: Any) -> list[str]:
        from .builtin import SamplingParams

        s = self._settings(overrides)
        params = SamplingParams(max_tokens=s["max_tokens"], temperature=s["temperature"], top_p=s["top_p"],
                                stop=tuple(s["stop"]), seed=s["seed"])
        return [c.text for c in self.engine.generate([_as_messages(x) for x in inputs], params,
                                                     prompt=self.prompt_cfg)]


class PromptedLLM:
    """An LLM that gets its input through a ChatPrompter. Chat clients (LocalLLM, OnlineChatModule)
    get messages; any other callable gets one string (``messages=True`` to send messages anyway)."""

    def __init__(self, llm: Callable, prompter: ChatPrompter | None = None, messages: bool | None = None):
        self.llm, self.prompter = llm, prompter or ChatPrompter()
        self.messages = messages if messages is not None else isinstance(llm, _ChatModel)

    def prompt(self, prompter: ChatPrompter) -> "PromptedLLM":
        return PromptedLLM(self.llm, prompter, self.messages)

    def __call__(self, inputs: Any) -> Any:
        return self.llm(self.prompter.messages(inputs) if self.messages else self.prompter.text(inputs))


def is_http_url(value: str) -> bool:
    """An http(s) URL with a host (what every server-URL setting accepts)."""
    from urllib.parse import urlparse

    parsed = urlparse(value)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def check_http_url(value: str) -> str:
    """The validator behind :data:`ServerUrl`: a clear error at config time, not a connection error
    (or a request to a relative path) at the first call."""
    if not is_http_url(value):
        raise ValueError(f"{value!r} is not an http(s) URL (e.g. http://127.0.0.1:8000/v1)")
    return value


# One type for every "OpenAI-compatible server URL" setting (infer/chat --url, the judge, run baselines,
# the UI's remote target), so they all refuse the same bad input with the same message.
ServerUrl = Annotated[str, AfterValidator(check_http_url)]
