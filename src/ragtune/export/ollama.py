"""An Ollama ``Modelfile`` for an exported GGUF: FROM/ADAPTER, the prompt TEMPLATE, SYSTEM, stops.

The TEMPLATE is derived from ragtune's own prompt builder (:func:`ragtune.core.prompt.build_prompt`),
not written by hand: the conversation ``[system=S, user=U]`` is rendered with marker strings and
the markers are replaced by Ollama's ``{{ .System }}`` / ``{{ .Prompt }}``, once with and once
without a system prompt. So Ollama sends a single-turn request in exactly the text the model was
fine-tuned on, for ragtune's plain template and for any chat template alike. Ollama adds BOS
itself (``tokenizer.ggml.add_bos_token``), so a leading BOS in the rendering is dropped.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.prompt import PromptConfig, build_prompt
from .gguf import ExportError

_SYS, _USER = "\x00RAGTUNE_SYSTEM\x00", "\x00RAGTUNE_PROMPT\x00"


def _go_literal(text: str) -> str:
    """Text inside a Go template: ``{{`` would start an action, so it is emitted as an action."""
    return text.replace("{{", '{{ "{{" }}')


def _render(tokenizer: Any, prompt: PromptConfig, with_system: bool) -> str:
    messages = ([{"role": "system", "content": _SYS}] if with_system else []) + [{"role": "user", "content": _USER}]
    cfg = prompt.model_copy(update={"system": None})  # the system text comes from the marker (or Ollama's SYSTEM)
    text = build_prompt(tokenizer, messages, cfg)
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos):
        text = text[len(bos):]
    return text


def _fill(text: str, with_system: bool) -> str:
    parts = text.split(_USER)
    if len(parts) != 2 or (with_system and text.count(_SYS) != 1):
        raise ExportError("the prompt template does not place the system and user text exactly once; "
                          "an Ollama TEMPLATE cannot be derived from it")
    out = _go_literal(text)
    return out.replace(_SYS, "{{ .System }}").replace(_USER, "{{ .Prompt }}")


def ollama_template(tokenizer: Any, prompt: PromptConfig) -> str:
    """The Go template for Ollama's ``TEMPLATE`` (single turn: ``.System`` and ``.Prompt``)."""
    with_sys = _fill(_render(tokenizer, prompt, True), True)
    without = _fill(_render(tokenizer, prompt, False), False)
    if with_sys == without:
        return with_sys
    return "{{ if .System }}" + with_sys + "{{ else }}" + without + "{{ end }}"


def _quote(text: str) -> str:
    if '"""' in text:
        raise ExportError('a Modelfile value cannot contain """')
    return '"""' + text + '"""'


def modelfile(model_file: str, *, tokenizer: Any, prompt: PromptConfig, stop: Sequence[str],
              adapter_file: str | None = None, num_ctx: int | None = None) -> str:
    """The Modelfile text. Greedy by default (``temperature 0``), like ragtune's engines."""
    lines = [f"FROM ./{model_file}"]
    if adapter_file:
        lines.append(f"ADAPTER ./{adapter_file}")
    lines.append(f"TEMPLATE {_quote(ollama_template(tokenizer, prompt))}")
    if prompt.system:
        lines.append(f"SYSTEM {_quote(prompt.system)}")
    for s in stop:
        lines.append(f"PARAMETER stop {_json_string(s)}")
    lines.append("PARAMETER temperature 0")
    if num_ctx:
        lines.append(f"PARAMETER num_ctx {int(num_ctx)}")
    return "\n".join(lines) + "\n"


def _json_string(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)
