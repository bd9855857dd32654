"""The teacher: any OpenAI-compatible endpoint (a ``ragtune serve``, vLLM, llama.cpp's server, a
hosted API) or a local model on the builtin engine. Both answer a batch of chat prompts and, on
request, the top-k log-probabilities of every generated token (what the ``kd`` fine-tune method
distils from).

Errors are values, not exceptions: :meth:`Teacher.chat_many` returns a :class:`Reply` or the
:class:`~ragtune.core.errors.BackendError` per prompt, so one failed request (after the HTTP client's
own retries with backoff) is counted and journaled by the caller, never lost and never fatal to the
other prompts of the batch.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from ..core.config import Config
from ..core.errors import BackendError, ConfigError, RagtuneError
from ..core.log import get_logger
from ..engine.client import api_base_url

log = get_logger(__name__)
API_KEY_ENV = "RAGTUNE_TEACHER_API_KEY"
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_TOKEN_ID = re.compile(r"token_id:(-?\d+)$")


class TeacherOptions(Config):
    """How to reach and sample the teacher (shared by ``ragtune data synth`` and ``data label``)."""
    teacher: str = Field(description="Teacher: an OpenAI-compatible base URL (http://...) or a local model "
                                     "(bundled name, dir, fine-tune output dir) run on the builtin engine.")
    teacher_model: str | None = Field(None, description="Model name at the teacher URL (default: the server's first).")
    teacher_api_key: str | None = Field(None, description=f"Bearer key for the teacher URL (or ${API_KEY_ENV}).")
    max_tokens: int = Field(512, ge=1, description="New tokens per teacher answer (reasoning teachers need more).")
    temperature: float = Field(0.0, ge=0, description="Teacher sampling temperature (0 = greedy).")
    timeout: float = Field(600.0, gt=0, description="Seconds per teacher request.")
    retries: int = Field(3, ge=0, description="Retries per teacher request after transport errors / 5xx (with backoff).")
    concurrency: int = Field(4, ge=1, description="Teacher requests in flight (URL), or prompts per batch (local).")

    @property
    def is_url(self) -> bool:
        return self.teacher.startswith(("http://", "https://"))


@dataclass
class Reply:
    """One teacher answer. ``tokens``: the generated token ids and per token the top-k
    ``[[id, logprob], ...]`` (only when log-probabilities were requested)."""
    text: str
    finish_reason: str
    token_ids: list[int] | None = None
    top_logprobs: list[list[list[float]]] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def content(self) -> str:
        """The answer without a reasoning model's ``<think>...</think>`` block."""
        text = _THINK.sub("", self.text)
        if "</think>" in text:   # a template that opened <think> in the prompt: keep what follows
            text = text.split("</think>", 1)[1]
        return text.strip()



class Teacher:
    """``Teacher(opts).chat_many([messages, ...], top_logprobs=5)`` -> ``[Reply | BackendError, ...]``."""

    def __init__(self, opts: TeacherOptions):
        self.opts = opts
        self._client = None
        self._engine = None

    # -- identity (journals record it: a resumed run must use the same teacher) ----------------------------
    @property
    def identity(self) -> str:
        """The model, not where it is served: a teacher restarted on another port is the same teacher."""
        return self.model_name() if self.opts.is_url else self.opts.teacher

    @property
    def name(self) -> str:
        if self.opts.is_url:
            return f"{api_base_url(self.opts.teacher)} ({self.model_name()})"
        return f"{self.opts.teacher} (builtin engine)"

    def model_name(self) -> str:
        if not self.opts.is_url:
            return self.opts.teacher
        client = self.client
        if client.model is None:
            data = client.request("GET", "/models").get("data") or []
            if not data:
                raise BackendError(f"{client.base_url}/models lists no model; pass teacher_model")
            client.model = data[0]["id"]
        return client.model

    @property
    def client(self):
        if self._client is None:
            from ..engine.client import OnlineChatModule

            key = self.opts.teacher_api_key or os.environ.get(API_KEY_ENV)
            self._client = OnlineChatModule(base_url=api_base_url(self.opts.teacher), model=self.opts.teacher_model,
                                            api_key=key, timeout=self.opts.timeout, retries=self.opts.retries)
        return self._client

    @property
    def engine(self):
        if self._engine is None:
            from ..engine.builtin import BuiltinEngine

            self._engine = BuiltinEngine.load(self.opts.teacher, max_batch_size=self.opts.concurrency)
        return self._engine

    def check(self) -> str:
        """Reach the teacher once (before any expensive work); returns its name."""
        try:
            return self.name
        except RagtuneError as exc:
            raise BackendError(f"teacher {self.opts.teacher} is not usable: {exc.message}",
                               hint="start it (e.g. `ragtune serve --model M`) or fix --teacher") from None

    # -- calls --------------------------------------------------------------------------------------------------
    def chat_many(self, prompts: Sequence[list[dict[str, str]]], *, temperature: float | None = None,
                  seed: int | None = None, top_logprobs: int | None = None) -> list[Reply | BackendError]:
        temperature = self.opts.temperature if temperature is None else temperature
        if self.opts.is_url:
            return self._remote(prompts, temperature, seed, top_logprobs)
        return self._local(prompts, temperature, seed, top_logprobs)

    def _remote(self, prompts, temperature, seed, top_logprobs) -> list[Reply | BackendError]:
        from ..core.concurrency import map_in_threads

        model = self.model_name()

        def one(messages) -> Reply | BackendError:
            body: dict[str, Any] = {"model": model, "messages": list(messages), "max_tokens": self.opts.max_tokens,
                                    "temperature": temperature}
            if seed is not None:
                body["seed"] = seed
            if top_logprobs is not None:
                # vLLM's extension (ragtune serve has it too): tokens as "token_id:N", so a student with
                # the same tokenizer can align the teacher's distribution to its own token ids
                body.update(logprobs=True, top_logprobs=top_logprobs, return_tokens_as_token_ids=True)
            try:
                data = self.client.request("POST", "/chat/completions", body)
                choice = data["choices"][0]
                reply = Reply(choice["message"].get("content") or "", choice.get("finish_reason") or "stop", raw=data)
                if top_logprobs is not None:
                    reply.token_ids, reply.top_logprobs = _parse_openai_logprobs(choice, self.client.base_url)
                return reply
            except BackendError as exc:
                return exc
            except (KeyError, IndexError, TypeError) as exc:
                return BackendError(f"teacher answer is not in the OpenAI chat shape ({type(exc).__name__}: {exc})")

        return map_in_threads(one, list(prompts), self.opts.concurrency)   # Ctrl-C stops at once

    def _local(self, prompts, temperature, seed, top_logprobs) -> list[Reply | BackendError]:
        from ..engine.base import SamplingParams

        params = SamplingParams(max_tokens=self.opts.max_tokens, temperature=temperature, seed=seed,
                                logprobs=top_logprobs)
        try:
            done = self.engine.generate([list(p) for p in prompts], params)
        except RagtuneError as exc:   # e.g. a prompt longer than the model's context: per prompt, below
            if len(prompts) == 1:
                return [BackendError(exc.message)]
            return [r for p in prompts for r in self._local([p], temperature, seed, top_logprobs)]
        out: list[Reply | BackendError] = []
        for c in done:
            reply = Reply(c.text, c.finish_reason)
            if top_logprobs is not None and c.logprobs is not None:
                reply.token_ids = [t.token_id for t in c.logprobs]
                reply.top_logprobs = [[[a.token_id, a.logprob] for a in t.top] for t in c.logprobs]
            out.append(reply)
        return out

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


def _parse_openai_logprobs(choice: dict, url: str) -> tuple[list[int], list[list[list[float]]]]:
    content = (choice.get("logprobs") or {}).get("content")
    if content is None:
        raise BackendError(f"teacher at {url} returned no logprobs",
                           hint="KD needs a teacher that returns logprobs: a ragtune or vLLM server")

    def token_id(token: str) -> int:
        m = _TOKEN_ID.match(token or "")
        if m is None:
            raise BackendError(f"teacher at {url} returned token {token!r}, not 'token_id:N'",
                               hint="KD needs token ids (return_tokens_as_token_ids): a ragtune or vLLM server")
        return int(m.group(1))

    ids = [token_id(t["token"]) for t in content]
    tops = [[[token_id(a["token"]), float(a["logprob"])] for a in t.get("top_logprobs") or []] for t in content]
    return ids, tops


def read_prompt_file(path: str, placeholders: tuple[str, ...]) -> str:
    """A prompt template (str.format placeholders), checked for the ones the caller fills."""
    from pathlib import Path

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"prompt file {path} cannot be read: {exc.strerror}") from None
    missing = [p for p in placeholders if "{" + p + "}" not in text]
    if missing:
        raise ConfigError(f"prompt file {path} lacks the placeholder(s) {', '.join('{' + p + '}' for p in missing)}",
                          hint="literal braces must be doubled: {{ and }}")
    return text
