"""Metric result, metric base class, registry by name and aggregation.

Every metric scores a batch of :class:`EvalItem` and returns one :class:`MetricResult` per item:
``value`` is a float in [0, 1] when ``status == "ok"``; an ``error`` or ``skipped`` item carries
``value=None`` and always a ``reason`` (never a silent NaN or a silent 0).
"""
from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

from ..core.config import Config
from ..core.errors import ConfigError
from ..core.registry import Registry

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
    ok = [float(r.value) for r in results if r.status == "ok" and r.value is not None]
    return Aggregate(total=float(sum(ok)), mean=(sum(ok) / len(ok)) if ok else None, n=len(results),
                     n_ok=len(ok), n_error=sum(r.status == "error" for r in results),
                     n_skipped=sum(r.status == "skipped" for r in results))


class NoParams(Config):
    """A metric without parameters."""


class Metric(abc.ABC):
    """Base class of every metric. A metric describes itself: ``name``, ``title`` (report column),
    ``kind`` (``binary``: 0/1 per item, reported as a share; ``continuous``: a score in [0, 1]),
    ``higher_is_better`` and ``Params``, the typed model of its parameters (validated when the
    metric is built: an unknown parameter names the valid ones). Subclasses implement
    :meth:`score` (and :meth:`score_batch` when batching pays) and register with
    ``@register_metric("name")``: one module plus that line adds a metric everywhere (``ragtune eval``,
    run YAMLs, the training-time dev metric, reports)."""
    name: ClassVar[str] = ""
    title: ClassVar[str] = ""           # column title in reports
    kind: ClassVar[Literal["binary", "continuous"]] = "continuous"
    higher_is_better: ClassVar[bool] = True
    needs: ClassVar[tuple[str, ...]] = ("prediction",)
    Params: ClassVar[type[Config]] = NoParams

    def __init__(self, params: Config | None = None, **values: Any):
        if params is None:
            params = self.Params.build(f"metric '{self.name}'", **values)
        elif values:
            raise ConfigError(f"metric '{self.name}': give params= or keyword parameters, not both")
        self.params = params
        for key in type(params).model_fields:   # metric bodies read their parameters as attributes
            setattr(self, key, getattr(params, key))

    def score_batch(self, items: Sequence[EvalItem]) -> list[MetricResult]:
        return [self.score(item) for item in items]

    @abc.abstractmethod
    def score(self, item: EvalItem) -> MetricResult:
        """This metric's result for one item (``MetricResult.skipped`` or ``.error`` when it cannot score)."""

    def describe(self) -> dict[str, Any]:
        """What summary.json records, so a number says how it was computed."""
        return {"name": self.name, "title": self.title, "kind": self.kind,
                "higher_is_better": self.higher_is_better, "params": self.params.model_dump(mode="json")}

    def aggregate(self, results: Sequence[MetricResult]) -> Aggregate:
        return aggregate(results)


def _builtin_metrics() -> None:
    from . import generation, judge, retrieval  # noqa: F401  (their registrations are the built-ins)
    from .metrics import cmrc, structured  # noqa: F401


METRICS: Registry[type[Metric]] = Registry("metric", "ragtune.metrics", _builtin_metrics)


def register_metric(name: str) -> Callable[[type], type]:
    """Class decorator: ``@register_metric("exact")``. Adding a metric = one module + this line."""
    def deco(cls):
        cls.name = name
        return METRICS.register(name, cls)

    return deco


def list_metrics() -> list[str]:
    return sorted(METRICS.names())


def metric_class(name: str) -> type[Metric]:
    return METRICS.get(name)


def get_metric(name: str, **params: Any) -> Metric:
    """Build a registered metric by name; unknown names/parameters raise ConfigError listing choices."""
    return METRICS.get(name)(**params)
