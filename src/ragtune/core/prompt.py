"""The one place where a conversation becomes model input text, for training AND inference.

Training (``finetune``) and serving (``serve``/``infer``) both call :func:`render_turns` /
:func:`build_prompt`, so the text a model was trained on is byte-for-byte the text it sees when
deployed (a test checks this).

Rules:
- The model's own chat template is used when its tokenizer has one; otherwise the documented
  plain template below (the bundled gemma-3-270m is a base model and has none). ``template`` may
  also name an entry of :data:`CHAT_TEMPLATES` (``plain``, ``gemma``): a chat format for base
  models without one, with the stop strings that end an answer in it.
- A named/plain template stops at its own markers (:func:`template_stops`): every engine merges
  them with a request's ``stop``, so an answer ends at the next ``### Instruction:`` instead of
  running to ``max_tokens``.
- A fine-tune records the prompt it trained with in ``ragtune_prompt.json``
  (:func:`write_recorded_prompt`); every consumer pointed at the output reads it with
  :func:`read_recorded_prompt` and uses it unless its own settings say otherwise.
- A ``system`` message in the sample wins; else ``PromptConfig.system`` is used.
- ``drop_builtin_system=True`` with no system at all sends an empty system message, which stops
  templates (Qwen-style) from injecting their built-in default system prompt.

Plain template (``PLAIN_TEMPLATE``)::

    {system}\n\n                          (only when there is a system prompt)
    ### Instruction:\n{user}\n\n### Response:\n{assistant}<eos>\n\n   (one block per turn)
"""
from __future__ import annotations

import json
import os
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from .config import Config
from .errors import ConfigError
from .log import get_logger
from .registry import Registry

log = get_logger(__name__)

Message = dict[str, str]

PLAIN_USER = "### Instruction:\n{content}\n\n### Response:\n"
PLAIN_SYSTEM = "{content}\n\n"
PLAIN_TEMPLATE = PLAIN_SYSTEM + PLAIN_USER + "{assistant}<eos>\n\n"
PLAIN_STOP = ("\n### Instruction:", "### Response:", "\n\n### ")


@dataclass(frozen=True)
class ChatTemplate:
    """A chat format for base models without a chat template of their own.

    ``system``/``user`` are formatted with ``{content}``; an answer is ``content + answer_end``
    (trained on) followed by ``turn_sep`` (not trained on). ``{eos}`` in ``answer_end`` is the
    tokenizer's EOS token. ``system_in_user``: the format has no system role, so the system prompt
    goes in front of the first user turn (``system`` formatted, then the user turn). ``stop``:
    the strings that end an answer (merged with a request's own ``stop`` by every engine)."""

    name: str
    system: str
    user: str
    answer_end: str
    turn_sep: str
    stop: tuple[str, ...]
    system_in_user: bool = False
    description: str = ""


CHAT_TEMPLATES: Registry[ChatTemplate] = Registry("chat template", "ragtune.chat_templates")
CHAT_TEMPLATES.register("plain", ChatTemplate(
    "plain", PLAIN_SYSTEM, PLAIN_USER, "{eos}", "\n\n", PLAIN_STOP,
    description="### Instruction: / ### Response: blocks (the default for models without a chat template)"))
CHAT_TEMPLATES.register("gemma", ChatTemplate(
    "gemma", "{content}\n\n", "<start_of_turn>user\n{content}<end_of_turn>\n<start_of_turn>model\n",
    "<end_of_turn>", "\n", ("<end_of_turn>",), system_in_user=True,
    description="gemma's <start_of_turn>user / <start_of_turn>model turns (system text in the first user turn)"))


class PromptConfig(Config):
    """How a conversation becomes model input: the nested ``prompt`` section of every job (fine-tune,
    deploy, infer), of ``ragtune run``'s ``llm.prompt`` and the argument of ``.prompt(...)``.
    Engines keep one as their default only; callers pass theirs per request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    system: str | None = Field(None, description="System prompt used when a conversation has none.")
    drop_builtin_system: bool = Field(
        False, description="Send an empty system prompt instead of the chat template's built-in default.")
    template: str = Field(
        "auto", description="auto: the tokenizer's chat template if it has one, else ragtune's plain one; "
                            "chat: the tokenizer's; or a named chat template (plain, gemma, ...).")

    @field_validator("template")
    @classmethod
    def _known_template(cls, value: str) -> str:
        if value not in ("auto", "chat") and value not in CHAT_TEMPLATES:
            raise ValueError(f"{CHAT_TEMPLATES.unknown_message(value)} (or auto, chat)")
        return value

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
                          hint=f"use template='auto' or a named one ({', '.join(CHAT_TEMPLATES.names())})")
    return has and cfg.template in ("auto", "chat")


def chat_format(tokenizer: Any, cfg: PromptConfig) -> str:
    """What the prompt is rendered with: ``"chat_template"`` (the tokenizer's) or a
    :data:`CHAT_TEMPLATES` name."""
    if uses_chat_template(tokenizer, cfg):
        return "chat_template"
    return "plain" if cfg.template in ("auto", "chat") else cfg.template


def template_stops(tokenizer: Any, cfg: PromptConfig | None = None) -> tuple[str, ...]:
    """The stop strings of the format ``cfg`` renders with on this tokenizer: a named/plain
    template's markers; none for the tokenizer's own chat template (its end-of-turn token is EOS)."""
    name = chat_format(tokenizer, cfg or PromptConfig())
    return () if name == "chat_template" else CHAT_TEMPLATES.get(name).stop


def merge_stops(stop: Sequence[str], extra: Sequence[str]) -> tuple[str, ...]:
    """A request's own stop strings, then the template's that it lacks."""
    return tuple(dict.fromkeys([*stop, *extra]))


def with_system(messages: Sequence[Message], cfg: PromptConfig) -> list[Message]:
    msgs = [dict(m) for m in messages]
    if msgs and msgs[0].get("role") == "system":
        return msgs
    if cfg.system is not None:
        return [{"role": "system", "content": cfg.system}, *msgs]
    if cfg.drop_builtin_system:
        return [{"role": "system", "content": ""}, *msgs]
    return msgs


def _named(tpl: ChatTemplate, messages: Sequence[Message], eos: str,
           add_generation_prompt: bool) -> list[tuple[str, bool]]:
    segments: list[tuple[str, bool]] = []
    pending_system = ""
    for m in messages:
        role, content = m["role"], m["content"]
        if role == "system":
            if content and tpl.system_in_user:
                pending_system = tpl.system.format(content=content)
            elif content:
                segments.append((tpl.system.format(content=content), False))
        elif role == "user":
            segments.append((tpl.user.format(content=pending_system + content), False))
            pending_system = ""
        elif role == "assistant":
            segments.append((content + tpl.answer_end.format(eos=eos), True))
            segments.append((tpl.turn_sep, False))
        else:
            raise ValueError(f"unknown role {role!r}")
    if not add_generation_prompt and segments and segments[-1] == (tpl.turn_sep, False):
        segments.pop()
    return segments


def _plain(messages: Sequence[Message], eos: str, add_generation_prompt: bool) -> list[tuple[str, bool]]:
    return _named(CHAT_TEMPLATES.get("plain"), messages, eos, add_generation_prompt)


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
    name = chat_format(tokenizer, cfg)
    if name == "chat_template":
        return _chat(tokenizer, messages, add_generation_prompt)
    eos = getattr(tokenizer, "eos_token", None) or ""
    return _named(CHAT_TEMPLATES.get(name), messages, eos, add_generation_prompt)


def build_prompt(tokenizer: Any, messages: Sequence[Message] | str, cfg: PromptConfig | None = None) -> str:
    """Inference prompt: the conversation so far plus the generation prompt for the next answer."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    return "".join(text for text, _ in render_turns(tokenizer, messages, cfg, add_generation_prompt=True))


def unescape_cli(text: str | None) -> str | None:
    """A template typed in a shell: the escapes ``\\n`` and ``\\t`` (two characters each) become a
    newline and a tab. Used by every CLI flag that takes a template (``data convert --template``,
    ``infer --template``), so one string means the same thing everywhere."""
    if text is None:
        return None
    return text.replace("\\n", "\n").replace("\\t", "\t")


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



# -- the prompt a fine-tune trained with ---------------------------------------------------------------
PROMPT_FILE = "ragtune_prompt.json"


@dataclass(frozen=True)
class RecordedPrompt:
    """What ``ragtune_prompt.json`` in a fine-tune output holds: the prompt settings, the chat format
    they resolved to on the model's tokenizer, and the instruction template the training data was
    written with (``ragtune data convert --template/--template-lang``), when one was applied."""

    prompt: PromptConfig
    chat_format: str
    instruction_template: str | None = None
    template_lang: str | None = None
    path: str = ""

    def describe(self) -> str:
        parts = [f"template={self.prompt.template} ({self.chat_format})", f"system={self.prompt.system!r}"]
        if self.prompt.drop_builtin_system:
            parts.append("drop_builtin_system=True")
        if self.template_lang or self.instruction_template:
            parts.append(f"instruction template={self.template_lang or 'custom'}")
        return ", ".join(parts)


def write_recorded_prompt(out_dir: str | os.PathLike, tokenizer: Any, cfg: PromptConfig,
                          instruction_template: str | None = None, template_lang: str | None = None) -> Path:
    from .io import atomic_write_json

    path = Path(out_dir) / PROMPT_FILE
    atomic_write_json(path, {"prompt": cfg.model_dump(mode="json"), "chat_format": chat_format(tokenizer, cfg),
                             "instruction_template": instruction_template, "template_lang": template_lang},
                      indent=1)
    return path


def recorded_prompt_path(model: str | os.PathLike) -> Path | None:
    """``ragtune_prompt.json`` of a fine-tune output ``DIR``, or of the output above ``DIR/merged``
    / ``DIR/adapter``; None when ``model`` is not one (a bundled name, a hub id, a plain dir)."""
    path = Path(os.fspath(model)).expanduser()
    for candidate in (path / PROMPT_FILE, path.parent / PROMPT_FILE if path.name in ("merged", "adapter") else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def read_recorded_prompt(model: str | os.PathLike | None) -> RecordedPrompt | None:
    """The prompt recorded with the fine-tune at ``model`` (see :func:`recorded_prompt_path`)."""
    if model is None:
        return None
    path = recorded_prompt_path(model)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("prompt"), dict):
        raise ConfigError(f"{path}: 'prompt' must be an object with the prompt settings")
    unknown = sorted(set(data) - {"prompt", "chat_format", "instruction_template", "template_lang"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}")
    return RecordedPrompt(PromptConfig.build(f"{path}: prompt", **data["prompt"]),
                          str(data.get("chat_format") or ""), data.get("instruction_template"),
                          data.get("template_lang"), str(path))


def resolve_prompt(explicit: PromptConfig | None, recorded: RecordedPrompt | PromptConfig | None,
                   where: str = "") -> PromptConfig:
    """The prompt a consumer uses: ``explicit``'s set fields over the recorded one, over the
    defaults. Says at INFO which recorded prompt it reuses and which settings override it."""
    explicit = explicit or PromptConfig()
    if recorded is None:
        return explicit
    base = recorded.prompt if isinstance(recorded, RecordedPrompt) else recorded
    label = recorded.describe() if isinstance(recorded, RecordedPrompt) else \
        f"template={base.template}, system={base.system!r}"
    suffix = f" ({where})" if where else ""
    log.info("using the prompt recorded with the fine-tune: %s%s", label, suffix)
    overridden = {k: getattr(explicit, k) for k in sorted(explicit.model_fields_set)
                  if getattr(explicit, k) != getattr(base, k)}
    if overridden:
        log.info("explicit prompt settings override the recorded ones: %s", overridden)
    return explicit.over(base)


def common_prefix(a, b) -> int:
    """Length of the common prefix of two token sequences: what prompts about one passage share (the
    trainer's packing and val split, the engine's prefix cache)."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
