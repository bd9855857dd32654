"""The one place where a conversation becomes model input text, for training AND inference.

Training (``finetune``) and serving (``serve``/``infer``) both call :func:`render_turns` /
:func:`build_prompt`, so the text a model was trained on is byte-for-byte the text it sees when
deployed (a test checks this).

Rules:
- The model's own chat template is used when its tokenizer has one; otherwise the documented
  plain template below (the bundled gemma-3-270m is a base model and has none).
- A ``system`` message in the sample wins; else ``PromptConfig.system`` is used.
- ``drop_builtin_system=True`` with no system at all sends an empty system message, which stops
  templates (Qwen-style) from injecting their built-in default system prompt.

Plain template (``PLAIN_TEMPLATE``)::

    {system}\n\n                          (only when there is a system prompt)
    ### Instruction:\n{user}\n\n### Response:\n{assistant}<eos>\n\n   (one block per turn)
"""
from __future__ import annotations

import string
from typing import Any, Literal, Mapping, Optional, Sequence

from pydantic import ConfigDict, Field

from .config import Config
from .errors import ConfigError

Message = dict[str, str]

PLAIN_USER = "### Instruction:\n{content}\n\n### Response:\n"
PLAIN_SYSTEM = "{content}\n\n"
PLAIN_TEMPLATE = PLAIN_SYSTEM + PLAIN_USER + "{assistant}<eos>\n\n"


class PromptConfig(Config):
    """How a conversation becomes model input: the nested ``prompt`` section of every job (fine-tune,
    deploy, infer), of ``ragtune run``'s ``llm.prompt`` and the argument of ``.prompt(...)``.
    Engines keep one as their default only; callers pass theirs per request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    system: Optional[str] = Field(None, description="System prompt used when a conversation has none.")
    drop_builtin_system: bool = Field(
        False, description="Send an empty system prompt instead of the chat template's built-in default.")
    template: Literal["auto", "chat", "plain"] = Field(
        "auto", description="auto: the tokenizer's chat template if it has one, else ragtune's plain one.")

    @classmethod
    def coerce(cls, value: "PromptConfig | Mapping[str, Any] | str | None") -> "PromptConfig":
        """What ``.prompt(...)`` accepts: None, a system string, a mapping (keys checked) or a PromptConfig."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(system=value)
        if isinstance(value, Mapping):
            return cls.build("prompt", **dict(value))
        raise ConfigError(f"prompt must be None, a str, a dict or a PromptConfig, got {type(value).__name__}")

    def over(self, base: "PromptConfig | None") -> "PromptConfig":
        """This config's explicitly set fields on top of ``base`` (e.g. flags over a fine-tune's
        saved prompt, which is over the defaults)."""
        if base is None:
            return self
        return base.model_copy(update={k: getattr(self, k) for k in self.model_fields_set})


def uses_chat_template(tokenizer: Any, cfg: PromptConfig) -> bool:
    has = bool(getattr(tokenizer, "chat_template", None))
    if cfg.template == "chat" and not has:
        raise ConfigError("prompt template 'chat' requested but the tokenizer has no chat template",
                          hint="use template='auto' or 'plain'")
    return has and cfg.template != "plain"


def with_system(messages: Sequence[Message], cfg: PromptConfig) -> list[Message]:
    msgs = [dict(m) for m in messages]
    if msgs and msgs[0].get("role") == "system":
        return msgs
    if cfg.system is not None:
        return [{"role": "system", "content": cfg.system}, *msgs]
    if cfg.drop_builtin_system:
        return [{"role": "system", "content": ""}, *msgs]
    return msgs


def _plain(messages: Sequence[Message], eos: str, add_generation_prompt: bool) -> list[tuple[str, bool]]:
    segments: list[tuple[str, bool]] = []
    for m in messages:
        role, content = m["role"], m["content"]
        if role == "system":
            if content:
                segments.append((PLAIN_SYSTEM.format(content=content), False))
        elif role == "user":
            segments.append((PLAIN_USER.format(content=content), False))
        elif role == "assistant":
            segments.append((content + eos, True))
            segments.append(("\n\n", False))
        else:
            raise ValueError(f"unknown role {role!r}")
    if not add_generation_prompt and segments and segments[-1] == ("\n\n", False):
        segments.pop()
    return segments


def _chat(tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool) -> list[tuple[str, bool]]:
    """Split the chat-template rendering into prompt/answer segments by rendering prefixes: the
    answer of turn i is the text between render(msgs[:i], gen_prompt=True) and render(msgs[:i+1])."""
    def render(msgs, gen):
        return tokenizer.apply_chat_template(list(msgs), tokenize=False, add_generation_prompt=gen)

    segments: list[tuple[str, bool]] = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = render(messages[:i], True)
        full = render(messages[: i + 1], False)
        if not prefix.startswith(done) or not full.startswith(prefix):
            raise ValueError("the chat template is not prefix-stable; cannot mask prompt tokens")
        segments.append((prefix[len(done):], False))
        segments.append((full[len(prefix):], True))
        done = full
    tail = render(messages, add_generation_prompt) if messages[-1]["role"] != "assistant" else ""
    if tail:
        segments.append((tail[len(done):], False))
    return [s for s in segments if s[0]]


def render_turns(tokenizer: Any, messages: Sequence[Message], cfg: PromptConfig | None = None,
                 add_generation_prompt: bool = False) -> list[tuple[str, bool]]:
    """``[(text, trainable), ...]``: concatenated, the full model input; ``trainable`` marks
    assistant answers (loss is computed on those only)."""
    cfg = cfg or PromptConfig()
    messages = with_system(messages, cfg)
    if uses_chat_template(tokenizer, cfg):
        return _chat(tokenizer, messages, add_generation_prompt)
    eos = getattr(tokenizer, "eos_token", None) or ""
    return _plain(messages, eos, add_generation_prompt)


def build_prompt(tokenizer: Any, messages: Sequence[Message] | str, cfg: PromptConfig | None = None) -> str:
    """Inference prompt: the conversation so far plus the generation prompt for the next answer."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    return "".join(text for text, _ in render_turns(tokenizer, messages, cfg, add_generation_prompt=True))


def bos_prefix(tokenizer: Any, text: str) -> bool:
    """Whether tokenization must add BOS: only when the tokenizer has one and the text (a chat
    template rendering) does not already start with it."""
    bos = getattr(tokenizer, "bos_token", None)
    return bool(bos) and not text.startswith(str(bos))


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if bos_prefix(tokenizer, text):
        ids = [tokenizer.bos_token_id, *ids]
    return ids


class ChatPrompter:
    """The RAG prompt: ``instruction`` as the system turn plus each ``extra_keys`` value under its
    own heading (or in place, where the instruction names it as ``{context_str}``); the ``query``
    as the user turn."""

    def __init__(self, instruction: str = "", extra_keys: Sequence[str] | None = None, query_key: str = "query"):
        self.instruction = instruction
        self.extra_keys = list(extra_keys or [])
        self.query_key = query_key

    def _fields(self) -> set[str]:
        return {f for _, f, _, _ in string.Formatter().parse(self.instruction) if f}

    def messages(self, inputs: Any) -> list[dict[str, str]]:
        if isinstance(inputs, str):
            inputs = {self.query_key: inputs}
        if not isinstance(inputs, dict):
            raise ConfigError(f"ChatPrompter expects a dict or a string, got {type(inputs).__name__}")
        missing = [k for k in [*self.extra_keys, *self._fields()] if k not in inputs]
        if missing:
            raise ConfigError(f"prompt input lacks {missing}; it has {sorted(inputs)}")
        values = {k: self._text(v) for k, v in inputs.items()}
        system = self.instruction.format(**values) if self._fields() else self.instruction
        for key in self.extra_keys:
            if key not in self._fields():
                system += f"\n\n### {key}:\n{values[key]}"
        msgs = [{"role": "system", "content": system.strip()}] if system.strip() else []
        if self.query_key not in self._fields():
            msgs.append({"role": "user", "content": values.get(self.query_key, "")})
        return msgs

    def text(self, inputs: Any) -> str:
        """One string, for plain-completion LLMs."""
        return "\n\n".join(m["content"] for m in self.messages(inputs)) + "\n\nAnswer:"

    @staticmethod
    def _text(value: Any) -> str:
        if isinstance(value, (list, tuple)):
            return "\n".join(v.get_text() if hasattr(v, "get_text") else str(v) for v in value)
        return value.get_text() if hasattr(value, "get_text") else str(value)

