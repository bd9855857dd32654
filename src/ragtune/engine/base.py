"""The engine protocol and the engine registry.

An engine turns prompts into completions. Two shapes, one registry (``ENGINES``):

- :class:`Engine` runs in this process (``builtin``: transformers; ``llamacpp``). ``ragtune serve``
  puts ragtune's OpenAI-compatible app in front of it, ``ragtune infer`` and ``TrainableModule``
  call it directly (no HTTP hop), and the fine-tune loop decodes its dev set through it.
- :class:`ServerEngine` is its own OpenAI-compatible server in a subprocess (``vllm``); ragtune
  supervises it and talks to it over HTTP.

Each engine declares its settings as a typed :class:`~ragtune.core.config.Config` (``Settings``),
so ``ragtune serve`` flags, ``llm.deploy_params`` in a run YAML and ``rt.deploy.<engine>(...)`` are
validated by the same class before anything loads. Adding an engine: one module with a subclass
plus one ``ENGINES.register`` line; the CLI choices and the docs table come from the registry.

Prompt settings are per request: every encode/generate call takes an optional
:class:`~ragtune.core.prompt.PromptConfig`; the engine's own ``prompt`` is only the default (what
a fine-tune saved), so two clients of one engine never overwrite each other's system prompt.
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, SerializeAsAny, field_validator, model_validator

from ..core.config import Config
from ..core.errors import ConfigError, RagtuneError
from ..core.prompt import PromptConfig, merge_stops, template_stops
from ..core.registry import Registry

if TYPE_CHECKING:
    from .constrained import ResponseFormat

Messages = Sequence[dict[str, str]]


class PromptTooLongError(RagtuneError, ValueError):
    """The prompt plus the requested new tokens do not fit in the model's context."""


@dataclass(frozen=True)
class SamplingParams:
    """Generation settings of one request. ``temperature == 0`` means greedy (the default: eval
    results must be reproducible)."""

    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None   # None: none; k >= 0: the chosen token's logprob and the top k (OpenAI shape)
    response_format: "ResponseFormat | None" = None  # constrained decoding (engine/constrained.py)
    # (token id, bias) pairs added to those tokens' logits before sampling, as OpenAI's logit_bias;
    # e.g. an EOS bias calibrates answer length on span tasks (BENCHMARKS.md, issue 14)
    logit_bias: tuple[tuple[int, float], ...] = ()

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            raise ConfigError(f"logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {self.logprobs}")
        for token_id, bias in self.logit_bias:
            if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
                raise ConfigError(f"logit_bias: token ids must be integers >= 0, got {token_id!r}")
            if not -MAX_LOGIT_BIAS <= bias <= MAX_LOGIT_BIAS:
                raise ConfigError(f"logit_bias: the bias of token {token_id} must be in "
                                  f"[-{MAX_LOGIT_BIAS:g}, {MAX_LOGIT_BIAS:g}], got {bias}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def batch_key(self) -> tuple:
        """Requests with the same key can share one batched decode."""
        sampling = (0.0, 1.0, None) if self.greedy else (self.temperature, self.top_p, self.seed)
        return (*sampling, self.logit_bias)


MAX_TOP_LOGPROBS = 20
MAX_LOGIT_BIAS = 100.0   # OpenAI's bound on a logit_bias value


@dataclass(frozen=True)
class TopLogprob:
    token_id: int
    token: str          # the token's text on its own
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its log-probability under the model's raw distribution (before
    temperature / top-p, as vLLM reports it) and the ``k`` most likely tokens at that step."""
    token_id: int
    token: str          # the text this token added to the completion (may be "" inside a UTF-8 character)
    logprob: float
    top: tuple[TopLogprob, ...] = ()


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) | "length" | "cancelled" (client left)
    token_ids: list[int] = field(default_factory=list, repr=False)  # generated ids (EOS excluded)
    logprobs: list[TokenLogprob] | None = field(default=None, repr=False)  # when params.logprobs was set


class EngineSettings(Config):
    """Base of every engine's typed settings (no fields: an engine adds its own)."""


class Engine(abc.ABC):
    """An in-process LLM engine. Subclasses set ``Settings`` and implement the abstract methods."""

    kind: ClassVar[str] = "llm"
    Settings: ClassVar[type[EngineSettings]] = EngineSettings
    description: ClassVar[str] = ""
    in_process: ClassVar[Literal[True]] = True
    supports_logprobs: ClassVar[bool] = False   # SamplingParams.logprobs honoured (serve rejects it otherwise)
    structured_output: ClassVar[bool] = False   # honours SamplingParams.response_format

    name: str
    prompt: PromptConfig          # the default; a request's own PromptConfig wins
    max_model_len: int

    @classmethod
    @abc.abstractmethod
    def load(cls, model: str, adapter: str | None = None, *, settings: EngineSettings | None = None,
             prompt: PromptConfig | None = None, name: str | None = None) -> "Engine":
        """Load ``model`` (a bundled name, dir, fine-tune output dir or hub id) plus ``adapter``.
        ``prompt``: explicit prompt settings over the fine-tune manifest's, over the defaults."""

    @abc.abstractmethod
    def encode_chat(self, messages: Messages | str, prompt: PromptConfig | None = None) -> list[int]:
        """Token ids of a chat prompt built by the shared prompt builder."""

    @abc.abstractmethod
    def encode_text(self, text: str) -> list[int]:
        """Token ids of a raw completion prompt (no template)."""

    @abc.abstractmethod
    def submit(self, ids: list[int], params: SamplingParams,
               on_delta: Callable[[str], None] | None = None) -> "Future[Completion]":
        """Queue one request (concurrent requests share batches or slots); streaming via ``on_delta``."""

    @abc.abstractmethod
    def generate_ids(self, prompts: Sequence[list[int]], params: SamplingParams,
                     progress: Callable[[list[int], list[Completion]], None] | None = None) -> list[Completion]:
        """Many prompts at once (eval sets), in input order; ``progress(indices, completions)``."""

    def generate(self, prompts: Sequence[Messages | str], params: SamplingParams | None = None,
                 raw: bool = False, prompt: PromptConfig | None = None) -> list[Completion]:
        """Chat prompts (a str is one user turn) through the shared prompt builder with ``prompt``
        (default: the engine's); ``raw=True`` sends the strings as they are (completion style)."""
        params = params or SamplingParams()
        ids = [self.encode_text(p) if raw else self.encode_chat(p, prompt) for p in prompts]  # type: ignore[arg-type]
        return self.generate_ids(ids, params if raw else self.chat_params(params, prompt))

    def chat_stops(self, prompt: PromptConfig | None = None) -> tuple[str, ...]:
        """The stop strings of the format :meth:`encode_chat` renders ``prompt`` with: a plain or
        named template's own markers (``\\n### Instruction:`` ...), none for a chat template."""
        return template_stops(getattr(self, "tokenizer", None), prompt or self.prompt)

    def chat_params(self, params: SamplingParams, prompt: PromptConfig | None = None) -> SamplingParams:
        """``params`` for a prompt built by :meth:`encode_chat`: its ``stop`` merged with the
        template's (the markers are cut from the text and ``finish_reason`` is "stop")."""
        extra = self.chat_stops(prompt)
        return replace(params, stop=merge_stops(params.stop, extra)) if extra else params

    def check_fits(self, ids: Sequence[int], max_tokens: int) -> None:
        if len(ids) + max_tokens > self.max_model_len:
            raise PromptTooLongError(
                f"the prompt has {len(ids)} tokens and {max_tokens} new tokens were requested, but this "
                f"model's context limit is {self.max_model_len} tokens (prompt + max_tokens)",
                hint="shorten the prompt or lower max_tokens")

    @property
    def vocab_size(self) -> int | None:
        """Rows of the output layer (None: unknown, token ids are not checked)."""
        return None

    def check_logit_bias(self, params: SamplingParams) -> None:
        """Every ``logit_bias`` token id is in the vocabulary (a ConfigError before any decoding)."""
        vocab = self.vocab_size
        for token_id, _ in params.logit_bias:
            if vocab is not None and token_id >= vocab:
                raise ConfigError(f"logit_bias: token id {token_id} is outside this model's vocabulary "
                                  f"(0..{vocab - 1})")

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        return None


class ServerEngine(abc.ABC):
    """An engine that is its own OpenAI-compatible server process (vLLM)."""

    Settings: ClassVar[type[EngineSettings]] = EngineSettings
    description: ClassVar[str] = ""
    in_process: ClassVar[Literal[False]] = False

    @classmethod
    @abc.abstractmethod
    def start(cls, model: str, adapter: str | None = None, *, settings: EngineSettings | None = None,
              prompt: PromptConfig | None = None, name: str | None = None, host: str = "127.0.0.1",
              port: int = 0, api_key: str | None = None) -> "RunningServer":
        """Start the server; returns once it answers health checks."""


@dataclass
class RunningServer:
    url: str                      # base URL (``/v1`` is under it)
    name: str                     # model name clients send
    stop: Callable[[], None]
    wait: Callable[[], None] | None = None   # blocks while the server runs (``ragtune serve``)


def _builtin_engines() -> None:
    from . import builtin, llamacpp, vllm  # noqa: F401  (their registrations are the built-in engines)


ENGINES: Registry[type[Engine] | type[ServerEngine]] = Registry("engine", "ragtune.engines", _builtin_engines)


def get_engine(name: str) -> type[Engine] | type[ServerEngine]:
    return ENGINES.get(name)


def engine_settings(name: str, values: dict[str, Any] | EngineSettings | None, source: str | None = None):
    """Validate ``values`` against the settings of engine ``name`` (unknown keys name the engine)."""
    cls = get_engine(name).Settings
    if isinstance(values, cls):
        return values
    if isinstance(values, EngineSettings):
        raise ConfigError(f"settings of type {type(values).__name__} given to engine '{name}' "
                          f"(it takes {cls.__name__})")
    for key in dict(values or {}):
        others = [n for n, e in ENGINES.items() if key not in cls.model_fields and key in e.Settings.model_fields]
        if others:
            raise ConfigError(f"'{key}' is a setting of engine {', '.join(others)}, not of engine '{name}'. "
                              f"Settings of '{name}': {', '.join(cls.model_fields) or '(none)'}")
    return cls.build(source or f"settings of engine '{name}'", **dict(values or {}))  # type: ignore[return-value]


def route_engine_settings(cls: type, data: Any) -> Any:
    """Before-validator of every config with an ``engine`` and a ``settings`` field (serve, infer,
    deploy): flat keys that belong to the chosen engine's settings (CLI flags, short YAML) move into
    ``settings``, which is then validated by that engine's own class. Unknown keys stay put, so the
    config's own unknown-key error still names them."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    engine = data.get("engine", "builtin")
    if not isinstance(engine, str) or engine not in ENGINES:
        return data
    given = data.get("settings") or {}
    if isinstance(given, EngineSettings):
        given = given.model_dump(exclude_unset=True)
    given = dict(given)
    own = set(getattr(cls, "model_fields", {}))
    engine_keys = {k for _, e in ENGINES.items() for k in e.Settings.model_fields}
    for key in [k for k in data if k not in own and k in engine_keys]:
        given[key] = data.pop(key)   # an engine key of another engine is reported by engine_settings
    data["settings"] = engine_settings(engine, given, f"settings of engine '{engine}'")
    return data


class EngineChoice(Config):
    """Base of every config that names an engine (``engine``, declared by each with its own help)
    and carries that engine's typed ``settings``: serve, infer, chat. Flat engine keys (CLI flags,
    short YAML) route into ``settings``; an unknown engine name is an error naming the valid ones."""

    settings: SerializeAsAny[EngineSettings] = Field(default_factory=EngineSettings,
                                                     description="The engine's own settings (dtype, device ...).")

    @model_validator(mode="before")
    @classmethod
    def _route_engine_settings(cls, data: Any) -> Any:
        return route_engine_settings(cls, data)

    @field_validator("engine", check_fields=False)
    @classmethod
    def _known_engine(cls, value: str) -> str:
        if value not in ENGINES:
            raise ValueError(ENGINES.unknown_message(value))
        return value


def engine_settings_classes() -> tuple[type[EngineSettings], ...]:
    """Every registered engine's settings class (the CLI makes one flag per setting)."""
    return tuple(dict.fromkeys(e.Settings for _, e in ENGINES.items()))
