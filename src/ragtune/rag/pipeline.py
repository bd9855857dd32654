"""A small composition API in the LazyLLM style the chapter uses.

    with pipeline() as ppl:
        ppl.retriever = Retriever(docs, "split_sent", topk=1, output_format="content", join="")
        ppl.formatter = (lambda nodes, query: dict(context_str=nodes, query=query)) | bind(query=ppl.input)
        ppl.llm = with_prompt(llm, ChatPrompter(instruction, extra_keys=["context_str"]))
    answer = ppl("What was ...?")

``pipeline(f, g, h)`` is the same without names. Each step gets the previous step's output;
``ppl.input`` stands for the pipeline's own input inside ``bind``.
"""
from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

from ..core.errors import ConfigError
from ..core.prompt import ChatPrompter
from ..engine.client import PromptedLLM

_CURRENT_INPUT: contextvars.ContextVar = contextvars.ContextVar("ragtune_pipeline_input")


class _PipelineInput:
    """Placeholder resolved to the running pipeline's input."""

    def __init__(self, owner: "Pipeline"):
        self.owner = owner

    def resolve(self) -> Any:
        frames = _CURRENT_INPUT.get({})
        if id(self.owner) not in frames:
            raise ConfigError("ppl.input used outside a run of its pipeline")
        return frames[id(self.owner)]


def _resolve(value: Any) -> Any:
    return value.resolve() if isinstance(value, _PipelineInput) else value


class Bound:
    """``fn`` with extra arguments; placeholders (``ppl.input``) resolved at call time."""

    def __init__(self, fn: Callable | None, args: tuple = (), kwargs: dict | None = None):
        self.fn, self.args, self.kwargs = fn, args, kwargs or {}

    def __ror__(self, fn: Callable) -> "Bound":  # (lambda ...) | bind(query=ppl.input)
        return Bound(fn, self.args, self.kwargs)

    def __call__(self, *inputs: Any) -> Any:
        if self.fn is None:
            raise ConfigError("bind(...) without a function: write f | bind(...) or bind(f, ...)")
        args = [_resolve(a) for a in self.args]
        kwargs = {k: _resolve(v) for k, v in self.kwargs.items()}
        return self.fn(*inputs, *args, **kwargs)


def bind(fn: Callable | None = None, *args: Any, **kwargs: Any) -> Bound:
    return Bound(fn, args, kwargs)


class Pipeline:
    def __init__(self, *steps: Callable):
        object.__setattr__(self, "_steps", [(f"step{i}", s) for i, s in enumerate(steps)])

    def __setattr__(self, name: str, value: Any) -> None:
        if not callable(value):
            raise ConfigError(f"pipeline step '{name}' must be callable, got {type(value).__name__}")
        steps = self._steps
        for i, (n, _) in enumerate(steps):
            if n == name:  # reassigning a step replaces it in place
                steps[i] = (name, value)
                return
        steps.append((name, value))

    def __getattr__(self, name: str) -> Any:
        for n, s in object.__getattribute__(self, "_steps"):
            if n == name:
                return s
        raise AttributeError(name)

    @property
    def input(self) -> _PipelineInput:
        return _PipelineInput(self)

    @property
    def steps(self) -> list[tuple[str, Callable]]:
        return list(self._steps)

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def start(self) -> "Pipeline":
        """Kept for LazyLLM compatibility: models here load on first use."""
        return self

    def __call__(self, x: Any) -> Any:
        if not self._steps:
            raise ConfigError("empty pipeline")
        frames = dict(_CURRENT_INPUT.get({}))
        frames[id(self)] = x
        token = _CURRENT_INPUT.set(frames)
        try:
            out = x
            for _, step in self._steps:
                out = step(out)
            return out
        finally:
            _CURRENT_INPUT.reset(token)

    def __repr__(self) -> str:
        return "pipeline(" + " -> ".join(n for n, _ in self._steps) + ")"


def pipeline(*steps: Callable) -> Pipeline:
    return Pipeline(*steps)


def with_prompt(llm: Callable, prompter: ChatPrompter) -> PromptedLLM:
    return PromptedLLM(llm, prompter)
