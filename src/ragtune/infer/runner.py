"""Batch inference over an eval set, resumable.

Every finished item is appended to ``<output>.partial.jsonl`` (flushed and fsynced) as
``{"index": i, "prediction": ..., "finish_reason": ...}``; its first line records a fingerprint of
the eval set and the generation settings (:class:`~ragtune.core.partial.PartialResults`). A rerun with the same settings skips the items already
there, so a killed run loses at most the batch in flight and never duplicates an item. At the end
``<output>`` is written atomically: a JSON list in eval-set order, each record the eval item plus
``prediction`` and ``finish_reason``; then the side file is removed.

Eval items: ``{context, question, answers}`` (rendered with ``template``, by default the chapter's
CMRC template), ``{instruction, input}`` (alpaca), ``{messages}`` (a trailing assistant message is the
reference, not input) or ``{prompt}`` (raw text, sent without any chat/plain template).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..core.config import Config
from ..core.errors import ConfigError, DataError
from ..core.io import atomic_write_json, check_output
from ..core.log import get_logger
from ..core.partial import PartialResults
from ..core.prompt import PromptConfig
from ..data.squad import DEFAULT_TEMPLATE as CHAPTER_TEMPLATE
from ..data.squad import fill_template
from ..engine.base import ENGINES, EngineChoice
from ..engine.client import ServerUrl, api_base_url

log = get_logger(__name__)

# CHAPTER_TEMPLATE is the chapter's CMRC extraction template: the constant the squad->alpaca
# converter uses, so inference prompts match what `ragtune data convert` trained on.


class InferSettings(Config):
    """How to generate (the ``llm.infer`` section of a run; part of every ``ragtune infer`` job)."""
    template: str | None = Field(None, description="Prompt template with {field} placeholders (default: the one recorded with a fine-tune --model, else the chapter's CMRC template for context/question items).")
    max_tokens: int = Field(64, ge=1, description="New tokens per item.")
    temperature: float = Field(0.0, ge=0, description="0 = greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    stop: list[str] = Field(default_factory=list, description="Stop strings.")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Sampling seed.")
    concurrency: int = Field(8, ge=1, description="Requests in flight against --url.")
    batch_size: int = Field(16, ge=1, description="Local model: prompts per batched generate.")
    retries: int = Field(4, ge=0, description="Retries per request against --url (with backoff).")
    timeout: float = Field(300.0, gt=0, description="Seconds per request against --url.")
    extractive: Literal["off", "vocab", "span"] = Field(
        "off", description="Span tasks, builtin engine: the output layer over the context's tokens only (vocab), "
                           "and the answer kept a substring of the context (span).")


class InferConfig(InferSettings, EngineChoice):
    """``ragtune infer``: predict every item of an eval set with a local model on any registered
    engine, or with an OpenAI-compatible server (``url``). Resumable (see the module docs)."""

    evalset: str = Field(description="Eval set: JSON list or JSONL of items.")
    output: str = Field(description="Predictions file (JSON list, eval-set order).")
    model: str | None = Field(None, description="Local model (name, dir, DIR/merged, fine-tune output DIR).")
    adapter: str | None = Field(None, description="PEFT adapter dir for --model.")
    engine: str = Field("builtin", description="Engine for --model (builtin, llamacpp, vllm ...).")
    url: ServerUrl | None = Field(None, description="OpenAI-compatible base URL instead of a local model.")
    remote_model: str | None = Field(None, description="Model name at --url (default: the server's first model).")
    api_key: str | None = Field(None, description="Bearer key for --url (or $RAGTUNE_API_KEY).")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="Prompt settings (system, drop_builtin_system, template) over the model's saved ones.")
    restart: bool = Field(False, description="Ignore earlier partial results and start over.")

    def execute(self, engine: Any = None, *, show_progress: bool = True):
        """The job: predictions for every item, in eval-set order (see :func:`run_infer`)."""
        return run_infer(self, engine=engine, show_progress=show_progress)


# -- eval set -----------------------------------------------------------------------------------------
def load_evalset(path: str | os.PathLike) -> list[dict[str, Any]]:
    from ..data.readers import read_items

    return read_items(path, what="eval set")


def item_input(item: dict[str, Any], template: str | None, *, file: str = "", record: int = 0,
               qa_template: str = CHAPTER_TEMPLATE):
    """("chat", messages) or ("raw", text) for one eval item. ``qa_template``: the instruction
    template of ``{context, question}`` items when ``template`` is None (the fine-tune's recorded one)."""
    def need(field: str, types=str):
        if field not in item:
            raise DataError("missing field", file=file, record=record, field=field)
        if not isinstance(item[field], types):
            raise DataError(f"must be {getattr(types, '__name__', types)}, got {type(item[field]).__name__}",
                            file=file, record=record, field=field)
        return item[field]

    if template is not None:
        return "chat", [{"role": "user", "content": fill_fields(template, item, file=file, record=record)}]
    if "messages" in item:
        msgs = need("messages", list)
        if msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "assistant":
            msgs = msgs[:-1]  # the reference answer
        if not msgs:
            raise DataError("no input message before the reference answer", file=file, record=record, field="messages")
        return "chat", msgs
    if "prompt" in item:
        return "raw", need("prompt")
    if "instruction" in item:
        text = need("instruction")
        extra = item.get("input") or ""
        return "chat", [{"role": "user", "content": text + ("\n" + extra if extra else "")}]
    if "question" in item:
        need("context"), need("question")
        # fill_template, not str.format: a context that contains braces is inserted verbatim
        return "chat", [{"role": "user", "content": fill_template(qa_template, item["context"], item["question"])}]
    raise DataError("an eval item needs {context, question}, {instruction[, input]}, {messages} or {prompt}",
                    file=file, record=record, hint="or pass --template with {field} placeholders")


_FIELD = re.compile(r"\{(\w+)\}")


def fill_fields(template: str, item: dict[str, Any], *, file: str = "", record: int = 0) -> str:
    """``{field}`` placeholders filled from the item in one pass: braces inside the values (code,
    JSON, LaTeX in a passage) are inserted verbatim, never formatted again."""
    def value(m: re.Match) -> str:
        name = m.group(1)
        if name not in item:
            raise DataError(f"the template needs field {name!r}", file=file, record=record, field=name)
        return str(item[name])

    return _FIELD.sub(value, template)


def recorded_instruction_template(model: str | None, explicit: str | None) -> str:
    """The template ``{context, question}`` items are asked with: the one the fine-tune at
    ``model`` recorded its training data was written with (``data convert --template-lang zh``),
    unless ``explicit`` (``--template``) is given; else the chapter's English one."""
    from ..core.prompt import read_recorded_prompt

    recorded = read_recorded_prompt(model)
    if recorded is None or recorded.instruction_template is None:
        return CHAPTER_TEMPLATE
    what = f"template_lang={recorded.template_lang}" if recorded.template_lang else "a custom template"
    if explicit is not None:
        if explicit != recorded.instruction_template:
            log.info("--template overrides the instruction template recorded with the fine-tune (%s)", what)
        return CHAPTER_TEMPLATE
    log.info("using the instruction template recorded with the fine-tune (%s) for {context, question} items", what)
    return recorded.instruction_template


# -- resumable side file ------------------------------------------------------------------------------
def fingerprint(cfg: InferConfig, items: list[dict]) -> dict[str, Any]:
    data = json.dumps(items, ensure_ascii=False, sort_keys=True).encode()
    # everything the answers depend on: batch size and dtype too (low-precision batched greedy
    # answers can flip at near-ties, docs/serve.md "Greedy results and batching")
    settings = cfg.model_dump(mode="json", include={"model", "adapter", "engine", "url", "remote_model", "template",
                                                    "prompt", "max_tokens", "temperature", "top_p", "stop", "seed",
                                                    "batch_size", "extractive", "settings"})
    return {"evalset_sha256": hashlib.sha256(data).hexdigest(), "items": len(items), "settings": settings}


def partial_path(output: str | os.PathLike) -> Path:
    return Path(str(output) + ".partial.jsonl")


# -- running ------------------------------------------------------------------------------------------
def run_infer(cfg: InferConfig, *, engine: Any = None, show_progress: bool = True,
              on_item: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Predict every eval item (resuming earlier partial results); returns the output records.
    ``engine``: an already loaded :class:`BuiltinEngine` to use instead of loading ``cfg.model``."""
    if (cfg.model is None) == (cfg.url is None) and engine is None:
        raise ConfigError("give exactly one of --model (local) or --url (OpenAI-compatible server)")
    check_output(cfg.output, what="output")      # before the model loads, not after the last item
    items = load_evalset(cfg.evalset)
    qa_template = recorded_instruction_template(cfg.model, cfg.template)
    inputs = [item_input(it, cfg.template, file=cfg.evalset, record=i, qa_template=qa_template)
              for i, it in enumerate(items)]
    partial = PartialResults(partial_path(cfg.output), fingerprint(cfg, items), restart=cfg.restart)
    todo = [i for i in range(len(items)) if i not in partial.done]
    if partial.done:
        log.info("resuming: %d of %d items already done in %s", len(partial.done), len(items), partial.path)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc="infer", unit="item", disable=not show_progress)

    def record(index: int, text: str, reason: str) -> None:
        partial.add({"index": index, "prediction": text, "finish_reason": reason})
        bar.update(1)
        if on_item is not None:
            on_item(index)

    try:
        if todo:
            if cfg.url is not None and engine is None:
                _run_remote(cfg, inputs, todo, record)
            elif engine is None and not ENGINES.get(cfg.engine).in_process:
                _run_on_server_engine(cfg, inputs, todo, record)
            else:
                _run_local(cfg, inputs, todo, record, engine)
    finally:
        bar.close()
        partial.close()
    rows = []
    for i, item in enumerate(items):
        got = partial.done[i]
        rows.append({**item, "prediction": got["prediction"], "finish_reason": got["finish_reason"]})
    atomic_write_json(cfg.output, rows)
    partial.path.unlink(missing_ok=True)
    return rows


def _sampling(cfg: InferConfig):
    from ..engine.builtin import SamplingParams

    return SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                          stop=tuple(cfg.stop), seed=cfg.seed)


def _run_local(cfg: InferConfig, inputs, todo: list[int], record, engine=None) -> None:
    owned = engine is None
    if owned:
        engine = _load_engine(cfg)
    _say_batch_dependence(engine, cfg)
    prompt = cfg.prompt.over(engine.prompt)   # this run's prompt, passed per request
    constraints = _constraints(cfg, engine, todo) if cfg.extractive != "off" else None
    try:
        # chat items end at the template's own markers too (plain: "\n### Instruction:" ...); raw
        # prompts have no template, so only the configured stop strings
        for kind, params in (("chat", engine.chat_params(_sampling(cfg), prompt)), ("raw", _sampling(cfg))):
            group = [n for n, i in enumerate(todo) if (inputs[i][0] == "raw") == (kind == "raw")]
            if not group:
                continue
            ids = [engine.encode_text(inputs[todo[n]][1]) if kind == "raw"
                   else engine.encode_chat(inputs[todo[n]][1], prompt) for n in group]
            extra = {"constraints": [constraints[n] for n in group]} if constraints is not None else {}

            def on_batch(positions: list[int], completions, group=group) -> None:
                for pos, c in zip(positions, completions):
                    record(todo[group[pos]], c.text, c.finish_reason)

            engine.generate_ids(ids, params, progress=on_batch, **extra)
    finally:
        if owned:
            engine.close()


def _constraints(cfg: InferConfig, engine: Any, todo: list[int]) -> list[Any]:
    """Per item, what extractive decoding lets it generate (its ``context`` field's tokens)."""
    from ..engine.builtin import BuiltinEngine
    from ..engine.extractive import build_constraint

    if not isinstance(engine, BuiltinEngine):
        raise ConfigError(f"extractive decoding is a feature of the builtin engine, not of '{cfg.engine}'",
                          hint="use --engine builtin, or --extractive off")
    items = load_evalset(cfg.evalset)
    out = []
    for i in todo:
        context = items[i].get("context")
        if not isinstance(context, str) or not context.strip():
            raise DataError("extractive decoding needs the item's context", file=cfg.evalset, record=i,
                            field="context")
        out.append(build_constraint(engine.tokenizer, context, cfg.extractive, engine.eos_ids, cfg.stop))
    return out


def _say_batch_dependence(engine: Any, cfg: InferConfig) -> None:
    dtype = str(getattr(getattr(engine, "model", None), "dtype", "")).replace("torch.", "")
    if cfg.temperature == 0 and cfg.batch_size > 1 and dtype in ("bfloat16", "float16"):
        log.info("greedy answers in %s can differ between batch sizes where two tokens are nearly tied; "
                 "--dtype fp32 makes them independent of --batch-size (docs/serve.md: greedy results and batching)",
                 dtype)


def _load_engine(cfg: InferConfig):
    from ..engine.base import get_engine

    engine_cls = get_engine(cfg.engine)
    assert engine_cls.in_process and cfg.model is not None   # run_infer sends --url and server engines elsewhere
    settings = cfg.settings
    if "max_batch_size" in type(settings).model_fields and "max_batch_size" not in settings.model_fields_set:
        settings = settings.model_copy(update={"max_batch_size": cfg.batch_size})
    return engine_cls.load(cfg.model, cfg.adapter, settings=settings, prompt=cfg.prompt)


def _run_on_server_engine(cfg: InferConfig, inputs, todo: list[int], record) -> None:
    """A server engine (vLLM): start it, infer over HTTP, stop it."""
    engine_cls = ENGINES.get(cfg.engine)
    assert not engine_cls.in_process and cfg.model is not None   # run_infer checked both
    from ..core.prompt import read_recorded_prompt, resolve_prompt

    running = engine_cls.start(cfg.model, cfg.adapter, settings=cfg.settings, prompt=cfg.prompt)
    # the server applies the model's chat template; the recorded system prompt is sent by the client
    prompt = resolve_prompt(cfg.prompt, read_recorded_prompt(cfg.model), f"{cfg.engine} server")
    try:
        _run_remote(cfg.model_copy(update={"url": running.url, "remote_model": running.name, "prompt": prompt}),
                    inputs, todo, record)
    finally:
        running.stop()



def _run_remote(cfg: InferConfig, inputs, todo: list[int], record) -> None:
    from ..core.concurrency import as_completed_in_threads
    from ..engine.client import OnlineChatModule

    assert cfg.url is not None
    client = OnlineChatModule(base_url=api_base_url(cfg.url), model=cfg.remote_model, api_key=cfg.api_key,
                              timeout=cfg.timeout, retries=cfg.retries, max_tokens=cfg.max_tokens,
                              temperature=cfg.temperature, top_p=cfg.top_p, stop=cfg.stop, seed=cfg.seed)
    if cfg.prompt.system is not None or cfg.prompt.drop_builtin_system:
        client.prompt(cfg.prompt)

    def one(index: int):
        kind, x = inputs[index]
        if kind == "raw":
            choice = client.completion(x)["choices"][0]
            return index, choice["text"] or "", choice.get("finish_reason") or "stop"
        choice = client.chat(x)["choices"][0]
        return index, choice["message"]["content"] or "", choice.get("finish_reason") or "stop"

    for _, done in as_completed_in_threads(one, todo, cfg.concurrency):   # Ctrl-C stops at once
        record(*done)
