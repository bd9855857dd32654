"""Deploy methods, registered by name: ``rt.deploy.builtin`` and ``rt.deploy.vllm``.

A deploy method is a small class: construct it with serve settings (any :class:`ServeConfig`
field), then ``deploy(model, adapter=None, prompt=None)`` returns a running :class:`Deployment`
with an OpenAI-compatible ``url`` and a ``client()`` that a RAG pipeline calls like a function::

    dep = rt.deploy.builtin(max_batch_size=8).deploy("gemma-3-270m")
    llm = dep.client(); llm("Hello")
    dep.stop()
"""
from __future__ import annotations

import abc

from typing import Any

from ..core.errors import ConfigError
from ..core.prompt import PromptConfig

DEPLOY_METHODS: dict[str, type["DeployMethod"]] = {}


def register(name: str):
    def wrap(cls):
        cls.name = name
        DEPLOY_METHODS[name] = cls
        return cls
    return wrap


def get_deploy_method(name_or_cls: Any) -> type["DeployMethod"]:
    if isinstance(name_or_cls, type) and issubclass(name_or_cls, DeployMethod):
        return name_or_cls
    if isinstance(name_or_cls, str) and name_or_cls.lower() in DEPLOY_METHODS:
        return DEPLOY_METHODS[name_or_cls.lower()]
    raise ConfigError(f"unknown deploy method {name_or_cls!r}; valid: {', '.join(DEPLOY_METHODS)}")


class Deployment:
    """A running server. ``url`` is the base (``.../v1`` is under it)."""

    def __init__(self, url: str, model_name: str, stop_fn, api_key: str | None = None, engine: Any = None):
        self.url, self.model_name, self._stop, self.api_key, self.engine = url, model_name, stop_fn, api_key, engine

    def client(self, **kwargs: Any):
        from ..engine.client import OnlineChatModule

        return OnlineChatModule(base_url=self.url + "/v1", model=self.model_name, api_key=self.api_key, **kwargs)

    def stop(self) -> None:
        self._stop()

    def __enter__(self) -> "Deployment":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class DeployMethod(abc.ABC):
    name = "base"

    def __init__(self, **settings: Any):
        from .server import ServeConfig

        unknown = set(settings) - set(ServeConfig.model_fields) | ({"model", "engine"} & set(settings))
        if unknown:
            raise ConfigError(f"unknown deploy setting(s) {sorted(unknown)} for {self.name}; valid: "
                              f"{', '.join(sorted(set(ServeConfig.model_fields) - {'model', 'engine'}))}")
        self.settings = settings

    def config(self, model: str, adapter: str | None, prompt: Any):
        from .server import ServeConfig

        values = {"port": 0, **self.settings, "model": str(model), "engine": self.name}
        if adapter is not None:
            values["adapter"] = str(adapter)
        if prompt is not None:
            p = PromptConfig.coerce(prompt)
            values.update(system=p.system, drop_builtin_system=p.drop_builtin_system, template=p.template)
        return ServeConfig.build(**values)

    @abc.abstractmethod
    def deploy(self, model: str, adapter: str | None = None, prompt: Any = None) -> Deployment:
        """Start serving ``model`` (+ ``adapter``) and return the running :class:`Deployment`."""


@register("builtin")
class builtin(DeployMethod):  # noqa: N801 - lower-case like peft / LazyLLM deploy names
    """transformers engine + FastAPI server in a background thread of this process."""

    def deploy(self, model: str, adapter: str | None = None, prompt: Any = None) -> Deployment:
        from .app import create_app
        from .server import ServerThread, build_engine

        cfg = self.config(model, adapter, prompt)
        engine = build_engine(cfg)
        key = cfg.resolved_api_key()
        srv = ServerThread(create_app(engine, api_key=key, default_max_tokens=cfg.default_max_tokens),
                           host=cfg.host, port=cfg.port).start()

        def stop():
            srv.stop()
            engine.close()

        return Deployment(srv.url, engine.name, stop, api_key=key, engine=engine)


@register("vllm")
class vllm(DeployMethod):  # noqa: N801
    """``vllm serve`` subprocess (CUDA GPU), supervised: health wait, bounded restarts, log tail."""

    def config(self, model, adapter, prompt):
        cfg = super().config(model, adapter, prompt)
        if cfg.port == 0:
            cfg.port = _free_port(cfg.host)
        return cfg

    def deploy(self, model: str, adapter: str | None = None, prompt: Any = None) -> Deployment:
        from ..engine.vllm import VllmServer

        cfg = self.config(model, adapter, prompt)
        server = VllmServer(cfg).start()
        return Deployment(server.supervisor.url, server.name, server.stop, api_key=cfg.resolved_api_key())


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# LazyLLM spelling
Vllm = vllm
