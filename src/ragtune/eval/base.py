"""Metric result, metric base class, registry by name and aggregation.

Every metric scores a batch of :class:`EvalItem` and returns one :class:`MetricResult` per item:
``value`` is a float in [0, 1] when ``status == "ok"``; an ``error`` or ``skipped`` item carries
``value=None`` and always a ``reason`` (never a silent NaN or a silent 0).
"""
from __future__ import annotations

import abc
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar, Literal, Sequence

from ..core.errors import ConfigError

Status = Literal["ok", "error", "skipped"]


@dataclass(frozen=True)
class MetricResult:
    value: float | None
    status: Status = "ok"
    reason: str | None = None
    details: dict[str, Any] | None = None   # e.g. judge verdicts, missing words, generated questions

    def __post_init__(self):
        if self.status == "ok":
            if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
                raise ValueError("an ok MetricResult needs a real value")
        elif not self.reason:
            raise ValueError(f"a {self.status} MetricResult needs a reason")

    @classmethod
    def ok(cls, value: float, reason: str | None = None, **details: Any) -> "MetricResult":
        return cls(float(value), "ok", reason, details or None)

    @classmethod
    def error(cls, reason: str, **details: Any) -> "MetricResult":
        return cls(None, "error", reason, details or None)

    @classmethod
    def skipped(cls, reason: str) -> "MetricResult":
        return cls(None, "skipped", reason)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["details"] is None:
            del d["details"]
        return d


@dataclass
class EvalItem:
    """One row of an eval set plus the model's prediction (and, for RAG metrics, retrieval)."""
    question: str = ""
    context: str = ""
    reference: str = ""
    prediction: str = ""
    all_answers: list[str] = field(default_factory=list)
    retrieved: list[str] = field(default_factory=list)        # retrieved chunks (RAG metrics)
    reference_contexts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Aggregate:
    """Sum and mean over the items that scored ``ok``; counts of the others."""
    total: float
    mean: float | None
    n: int
    n_ok: int
    n_error: int
    n_skipped: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def aggregate(results: Sequence[MetricResult]) -> Aggregate:
    ok = [r.value for r in results if r.status == "ok"]
    return Aggregate(total=float(sum(ok)), mean=(sum(ok) / len(ok)) if ok else None, n=len(results),
                     n_ok=len(ok), n_error=sum(r.status == "error" for r in results),
                     n_skipped=sum(r.status == "skipped" for r in results))


class Metric(abc.ABC):
    """Base class: subclasses set ``name``/``title`` and implement :meth:`score_batch`."""
    name: ClassVar[str] = ""
    title: ClassVar[str] = ""           # column title in reports
    needs: ClassVar[tuple[str, ...]] = ("prediction",)

    def score_batch(self, items: Sequence[EvalItem]) -> list[MetricResult]:
        return [self.score(item) for item in items]

    @abc.abstractmethod
    def score(self, item: EvalItem) -> MetricResult:
        """This metric's result for one item (``MetricResult.skipped`` or ``.error`` when it cannot score)."""

    def describe(self) -> dict[str, Any]:
        """Name + parameters, written into summary.json so a number says how it was computed."""
        return {"name": self.name, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}

    def aggregate(self, results: Sequence[MetricResult]) -> Aggregate:
        return aggregate(results)


METRICS: dict[str, Callable[..., Metric]] = {}


def register_metric(name: str) -> Callable[[type], type]:
    """Class decorator: ``@register_metric("exact")``. Adding a metric = one module + this line."""
    def deco(cls):
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        METRICS[name] = cls
        return cls

    return deco


def list_metrics() -> list[str]:
    return sorted(METRICS)


def get_metric(name: str, **params: Any) -> Metric:
    """Build a registered metric by name; unknown names/parameters raise ConfigError listing choices."""
    import inspect

    if name not in METRICS:
        import difflib

        close = difflib.get_close_matches(name, list(METRICS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown metric '{name}'{hint}. Valid metrics: {', '.join(list_metrics())}")
    cls = METRICS[name]
    accepted = inspect.signature(cls).parameters
    unknown = [p for p in params if p not in accepted]
    if unknown:
        raise ConfigError(f"metric '{name}' has no parameter '{unknown[0]}'. "
                          f"Valid parameters: {', '.join(accepted) or '(none)'}")
    return cls(**params)
