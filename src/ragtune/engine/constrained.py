"""Structured output: OpenAI's ``response_format`` by constrained decoding, for in-process engines.

``{"type": "json_object"}`` (any JSON object) and ``{"type": "json_schema", "json_schema": {"schema":
{...}}}`` become a grammar; at every decoding step the tokens that cannot continue a valid document
get ``-inf`` logits, so greedy and sampled answers alike parse (and follow the schema) by
construction. Once the document is complete, only end-of-sequence tokens are allowed.

The grammar engine is **llguidance** (guidance-ai; a structured-output backend of vLLM and SGLang,
and llama.cpp's optional LLGuidance build), for both the builtin (transformers) and the llama.cpp
engine, so one schema means the same constraint on either. Measured on the 2-core box with
gemma-3-270m's 262,144-token vocabulary and transformers 5 (offline, shared box, 2026-11):
llguidance computes a token mask in ~0.06 ms per step after a one-off ~20 s index of the tokenizer
per engine, and is one 3 MB wheel without dependencies. xgrammar 0.2.9 also works offline on CPU
(schema compiled in 0.24 s; 72 ms per step including building and masking a 262k-logit tensor) but
depends on triton and apache-tvm-ffi and took 30 s to import. (outlines-core, lm-format-enforcer and
transformers-cfg were not tried.) llguidance's own ``apply_token_bitmask_inplace`` for torch took
over a second per call on CPU, so masks are unpacked here with numpy. llama.cpp's GBNF sampler is
not used: one library gives both engines the same JSON (same separators, same schema support,
same errors).

JSON is written in Python's ``json.dumps`` style (``", "`` and ``": "``, no newlines): the style
ragtune's own training data uses, and with no free whitespace a model cannot loop on blank lines.
"""
from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..core.errors import BackendError, ConfigError
from ..core.log import get_logger

log = get_logger(__name__)

JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
INSTALL_HINT = "pip install 'ragtune[structured]'   (installs llguidance)"
FORMAT_TYPES = ("text", "json_object", "json_schema")


def _llguidance():
    try:
        import llguidance
    except ImportError:
        raise BackendError("response_format (constrained decoding) needs the llguidance package, "
                           "which is not installed", hint=INSTALL_HINT) from None
    return llguidance


@dataclass(frozen=True)
class ResponseFormat:
    """A validated ``response_format``. ``schema_json`` is the schema serialised (hashable)."""

    type: Literal["json_object", "json_schema"]
    schema_json: str = '{"type": "object"}'
    name: str | None = None

    @property
    def schema(self) -> dict[str, Any]:
        return json.loads(self.schema_json)

    def grammar(self) -> str:
        """The llguidance grammar (a JSON string) for this format."""
        return _llguidance().LLMatcher.grammar_from_json_schema(self.schema_json, defaults=JSON_STYLE)


def parse_response_format(value: Any, field: str = "response_format") -> ResponseFormat | None:
    """OpenAI's ``response_format`` object -> :class:`ResponseFormat` (None for ``text``/absent).
    Raises :class:`ConfigError` naming the offending field; the schema is compiled here, so a
    schema the grammar engine cannot take is the client's 400, before any decoding."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{field} must be an object like {{\"type\": \"json_object\"}}, got {type(value).__name__}")
    kind = value.get("type")
    if kind not in FORMAT_TYPES:
        raise ConfigError(f"{field}.type must be one of {', '.join(FORMAT_TYPES)}, got {kind!r}")
    unknown = sorted(set(value) - {"type", "json_schema"})
    if unknown:
        raise ConfigError(f"{field} has unknown field(s) {unknown}; it takes 'type' and, for json_schema, 'json_schema'")
    if kind == "text":
        return None
    if kind == "json_object":
        fmt = ResponseFormat("json_object")
    else:
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            raise ConfigError(f"{field}.json_schema must be an object with a 'schema' (and a 'name'), "
                              f"got {type(spec).__name__}")
        schema = spec.get("schema")
        if not isinstance(schema, dict):
            raise ConfigError(f"{field}.json_schema.schema must be a JSON Schema object, got {type(schema).__name__}")
        extra = sorted(set(spec) - {"name", "schema", "strict", "description"})
        if extra:
            raise ConfigError(f"{field}.json_schema has unknown field(s) {extra}; "
                              "it takes name, schema, strict, description")
        name = spec.get("name")
        fmt = ResponseFormat("json_schema", json.dumps(schema, ensure_ascii=False),
                             name if isinstance(name, str) else None)
    check_grammar(fmt, f"{field}.json_schema.schema" if kind == "json_schema" else field)
    return fmt


def check_grammar(fmt: ResponseFormat, field: str) -> None:
    llg = _llguidance()
    try:
        grammar = fmt.grammar()
    except ValueError as exc:
        raise ConfigError(f"{field}: {exc}") from None
    is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise ConfigError(f"{field} cannot be used for constrained decoding: {messages[0] if messages else 'invalid'}",
                          hint="llguidance supports most of JSON Schema draft 2020-12; unsupported keywords are "
                               "rejected rather than ignored")


# -- per-engine token index ------------------------------------------------------------------------
class GrammarContext:
    """llguidance's index of one tokenizer's vocabulary (built once per engine: ~20 s for a
    262k-token vocabulary on a 2-core CPU, ~1 s for small vocabularies)."""

    def __init__(self, tokenizer: Any, n_vocab: int, eos_ids: Sequence[int]):
        import llguidance.hf

        self.n_vocab = n_vocab
        self.eos_ids = sorted({int(i) for i in eos_ids})
        log.info("indexing the tokenizer's %d tokens for constrained decoding (once per engine)", n_vocab)
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=n_vocab, eos_token=self.eos_ids)

    def constraint(self, fmt: ResponseFormat) -> TokenConstraint:
        return TokenConstraint(self, fmt)


_CONTEXTS: dict[tuple, GrammarContext] = {}
_CONTEXT_LOCK = threading.Lock()


def grammar_context(tokenizer: Any, n_vocab: int, eos_ids: Sequence[int]) -> GrammarContext:
    """The cached :class:`GrammarContext` of ``tokenizer`` (dropped when the tokenizer is)."""
    _llguidance()
    key = (id(tokenizer), int(n_vocab), tuple(sorted({int(i) for i in eos_ids})))
    with _CONTEXT_LOCK:
        ctx = _CONTEXTS.get(key)
        if ctx is None:
            ctx = _CONTEXTS[key] = GrammarContext(tokenizer, n_vocab, eos_ids)
            weakref.finalize(tokenizer, _CONTEXTS.pop, key, None)
        return ctx


class TokenConstraint:
    """One request's grammar state: which tokens may come next; advanced by the sampled tokens."""

    def __init__(self, ctx: GrammarContext, fmt: ResponseFormat):
        import numpy as np

        llg = _llguidance()
        self.ctx, self.fmt = ctx, fmt
        self.matcher = llg.LLMatcher(ctx.tokenizer, fmt.grammar(), log_level=0)
        if self.matcher.is_error():
            raise ConfigError(f"response_format cannot be compiled: {self.matcher.get_error()}")
        self._bits = np.zeros(((ctx.n_vocab + 31) // 32,), dtype=np.int32)
        self.consumed = 0  # generated tokens fed to the matcher so far

    def allowed(self):
        """Boolean numpy mask over the vocabulary of the tokens allowed next."""
        import numpy as np

        self.matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        mask = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: self.ctx.n_vocab].astype(bool)
        if self.matcher.is_error():  # cannot happen when only masked tokens are sampled
            raise BackendError(f"constrained decoding failed: {self.matcher.get_error()}")
        return mask

    def consume(self, token: int) -> None:
        self.consumed += 1
        if not self.matcher.consume_token(int(token)):
            raise BackendError(f"constrained decoding: token {token} was sampled but is not allowed "
                               f"({self.matcher.get_error()})")

    def mask_numpy(self, logits) -> None:
        """Set the logits (numpy, one row) of disallowed tokens to -inf, in place."""
        import numpy as np

        allowed = self.allowed()
        width = min(len(logits), len(allowed))
        logits[:width][~allowed[:width]] = -np.inf
        logits[width:] = -np.inf


class BatchConstraints:
    """A transformers logits processor for a batch where some rows are constrained: each row with
    a constraint first consumes the tokens generated since the last step (read from ``input_ids``
    after ``prompt_len``), then masks its logits. Rows that ``finished(i)`` are left alone."""

    def __init__(self, constraints: Sequence[TokenConstraint | None], prompt_len: int,
                 finished: Callable[[int], bool]):
        self.constraints, self.prompt_len, self.finished = list(constraints), prompt_len, finished

    def __call__(self, input_ids, scores):
        import torch

        generated = input_ids.shape[1] - self.prompt_len
        for i, c in enumerate(self.constraints):
            if c is None or self.finished(i):
                continue
            for pos in range(c.consumed, generated):
                c.consume(int(input_ids[i, self.prompt_len + pos]))
            allowed = torch.from_numpy(c.allowed()).to(scores.device)
            width = min(scores.shape[1], allowed.shape[0])
            row = scores[i]
            row[:width].masked_fill_(~allowed[:width], float("-inf"))
            row[width:] = float("-inf")
        return scores


def batch_processor(formats: Sequence[ResponseFormat | None], context: Callable[[], GrammarContext],
                    prompt_len: int, finished: Callable[[int], bool]):
    """The logits processor for a batch (None when no row is constrained); ``context()`` gives the
    engine's :class:`GrammarContext`."""
    if not any(formats):
        return None
    ctx = context()
    return BatchConstraints([ctx.constraint(f) if f else None for f in formats], prompt_len, finished)


def structured_engines() -> list[str]:
    """Names of the registered engines that honour ``response_format``."""
    from .base import ENGINES

    return [name for name, cls in ENGINES.items() if getattr(cls, "structured_output", False)]


def request_format(engine: Any, value: Any) -> ResponseFormat | None:
    """A request's ``response_format`` for ``engine``: parsed and compiled, or a
    :class:`ConfigError` / :class:`BackendError` for the client (the HTTP app answers 400)."""
    if value is None:
        return None
    if not getattr(engine, "structured_output", False):
        raise ConfigError(f"response_format needs constrained decoding, which this server's engine "
                          f"({type(engine).__name__}) does not do; engines that do: "
                          f"{', '.join(structured_engines())}")
    return parse_response_format(value)
