"""The one fine-tune method protocol and its registry (peft-style register-by-name).

Every method, LLM or embedder, builtin or backend, is a :class:`FinetuneMethod` registered in
:data:`METHODS` under its name, with a typed config class that subclasses :class:`FinetuneConfig`
(one vocabulary: ``method``, ``base``, ``train``, ``output``). The method's name is the
discriminator of the config union: ``finetune_config({"method": "lora", ...})`` validates with
``LoraConfig``, ``{"method": "freeze", ...}`` with ``FreezeConfig``; a key of another method is an
unknown key that names the method and its valid keys. Adding a method (say DoRA) is one module with
a config class and a method class plus one ``METHODS.register`` line; the CLI choices, the flags
and the docs table come from the registry.

    lora = rt.finetune.lora                              # the registered method object
    cfg = lora.config(base="gemma-3-270m", train="t.json", output="out", learning_rate=1e-4)
    result = cfg.execute()                               # = lora.train(cfg)
    bound = lora(learning_rate=1e-4)                     # params now, paths later (TrainableModule)
"""
from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from ..core.config import Config
from ..core.errors import ConfigError
from ..core.registry import Registry

Kind = Literal["llm", "embedding"]
PATH_FIELDS = ("base", "train", "output")


class FinetuneConfig(Config):
    """What every fine-tune has: which method, from which model, on which data, into which dir."""

    method: str = Field(description="Fine-tune method (see `ragtune finetune --help`).")
    base: str | None = Field(None, description="Base model: bundled name, local dir or HF id.")
    train: str | None = Field(None, description="Training data file.")
    output: str | None = Field(None, description="Output directory.")
    seed: int = Field(42, description="Seed for initialisation, data order and splits.")

    def require_paths(self) -> None:
        missing = [k for k in PATH_FIELDS if not getattr(self, k)]
        if missing:
            raise ConfigError(f"missing required setting(s): {', '.join(missing)}",
                              hint="CLI: --base M --train F --output DIR; Python: method.config(base=, train=, output=)")

    @property
    def method_object(self) -> "FinetuneMethod":
        return METHODS.get(self.method)

    def execute(self) -> "FinetuneResult":
        """The job: run this config's method in this process (launchers: ragtune.workflow)."""
        self.require_paths()
        return self.method_object.train(self)


@dataclass
class FinetuneResult:
    """What a fine-tune leaves: ``output`` (serve it with ``ragtune serve --model OUTPUT``) and its
    metrics (also in ``OUTPUT/metrics.json``)."""
    output: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    adapter: Path | None = None
    merged: Path | None = None


class FinetuneMethod(abc.ABC):
    """A registered method. Subclasses set the class attributes and implement :meth:`run`."""

    name: ClassVar[str] = ""
    kind: ClassVar[Kind] = "llm"
    config_cls: ClassVar[type[FinetuneConfig]] = FinetuneConfig
    description: ClassVar[str] = ""
    launchable: ClassVar[bool] = False   # can run under torchrun/slurm as `ragtune finetune --config`

    def config(self, source: str | None = None, **values: Any) -> FinetuneConfig:
        """Validated settings of this method (unknown keys are errors naming the valid ones)."""
        given = values.pop("method", self.name)
        if given != self.name:
            raise ConfigError(f"method '{given}' given to rt.finetune.{self.name}")
        own = self.config_cls.model_fields
        for key in values:
            owners = [n for n, m in METHODS.items() if key not in own and key in m.config_cls.model_fields]
            if owners:
                where = f" in {source}" if source else ""
                raise ConfigError(f"'{key}'{where} does not apply to method '{self.name}' (it is a setting of "
                                  f"{', '.join(owners)})", hint=f"settings of {self.name}: {', '.join(own)}")
        return self.config_cls.build(source, method=self.name, **values)

    def __call__(self, **values: Any) -> "BoundMethod":
        """``rt.finetune.lora(learning_rate=1e-4)``: hyper-parameters now, paths later."""
        placeholders = {k: "<placeholder>" for k in PATH_FIELDS if k not in values}
        self.config(**placeholders, **values)   # validate now: a typo fails at the call site
        return BoundMethod(self, dict(values))

    @abc.abstractmethod
    def train(self, cfg: Any) -> FinetuneResult:
        """The protocol: train per ``cfg`` (an instance of ``config_cls``) and write ``cfg.output``."""

    def run(self, base: str | None = None, train: str | None = None, output: str | None = None,
            **params: Any) -> FinetuneResult:
        """Shorthand: ``rt.finetune.lora.run(base, train, output, learning_rate=1e-4)``."""
        return self.config(base=base, train=train, output=output, **params).execute()

    def __repr__(self) -> str:
        return f"<fine-tune method {self.name} ({self.kind})>"


@dataclass(frozen=True)
class BoundMethod:
    """A method with some hyper-parameters; the paths come when it runs."""
    method: FinetuneMethod
    params: dict[str, Any]

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def cfg(self) -> FinetuneConfig:
        return self.method.config(**self.params)

    def config(self, **values: Any) -> FinetuneConfig:
        return self.method.config(**{**self.params, **values})

    def run(self, **values: Any) -> FinetuneResult:
        return self.config(**values).execute()


def _builtin_methods() -> None:
    from . import llamafactory  # noqa: F401
    from .embed import methods as _embed  # noqa: F401
    from .llm import dora, kd, methods  # noqa: F401


METHODS: Registry[FinetuneMethod] = Registry("fine-tune method", "ragtune.finetune_methods", _builtin_methods)


def get_method(method: str | FinetuneMethod | BoundMethod) -> FinetuneMethod:
    if isinstance(method, BoundMethod):
        return method.method
    if isinstance(method, FinetuneMethod):
        return method
    if not isinstance(method, str):
        raise ConfigError(f"{method!r} is not a fine-tune method",
                          hint="use rt.finetune.<method> or its name: " + ", ".join(METHODS.names()))
    return METHODS.get(method)


def finetune_config(values: Mapping[str, Any] | FinetuneConfig, source: str | None = None,
                    default_method: str = "lora") -> FinetuneConfig:
    """The config union, discriminated by ``method``: validated by that method's own class."""
    if isinstance(values, FinetuneConfig):
        return values
    values = dict(values)
    method = get_method(values.pop("method", default_method))
    return method.config(source, **values)
