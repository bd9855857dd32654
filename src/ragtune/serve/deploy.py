"""Deploy methods: ``rt.deploy.builtin``, ``rt.deploy.vllm``, ``rt.deploy.llamacpp``, ... one per
registered engine (:data:`ragtune.engine.base.ENGINES`), so a new engine is deployable with no code
here.

A deploy method is constructed with serve settings (any :class:`ServeConfig` field or engine
setting, validated at once), then ``deploy(model, adapter=None, prompt=None)`` returns a running
:class:`Deployment` with an OpenAI-compatible ``url`` and a ``client()``::

    dep = rt.deploy.builtin(max_batch_size=8).deploy("gemma-3-270m")
    llm = dep.client(); llm("Hello")
    dep.stop()

In-process engines get ragtune's HTTP app in a background thread, and ``Deployment.engine`` is the
engine itself (``TrainableModule`` and ``ragtune infer`` call it directly, without HTTP); a server
engine (vLLM) is its own process and ``Deployment.engine`` is None.
"""
from __future__ import annotations

from typing import Any, Callable

from ..core.errors import ConfigError
from ..core.prompt import PromptConfig
from ..engine.base import ENGINES

_FIXED = {"model", "adapter", "engine", "prompt"}


class Deployment:
    """A running server. ``url`` is the base (``.../v1`` is under it)."""

    def __init__(self, url: str, model_name: str, stop_fn: Callable[[], None], api_key: str | None = None,
                 engine: Any = None, wait_fn: Callable[[], None] | None = None):
        self.url, self.model_name, self._stop, self.api_key, self.engine = url, model_name, stop_fn, api_key, engine
        self._wait = wait_fn

    def client(self, **kwargs: Any):
        from ..engine.client import OnlineChatModule

        return OnlineChatModule(base_url=self.url + "/v1", model=self.model_name, api_key=self.api_key, **kwargs)

    def wait(self) -> None:
        """Block while the server runs (``ragtune serve``)."""
        if self._wait is not None:
            self._wait()

    def stop(self) -> None:
        self._stop()

    def __enter__(self) -> "Deployment":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def deploy(cfg: Any) -> Deployment:
    """Start ``cfg`` (a :class:`ServeConfig`): the one wiring of ``ragtune serve``, ``rt.deploy.*``,
    ``TrainableModule`` and the infer stages of ``ragtune run``."""
    from ..engine.base import get_engine
    from .app import create_app
    from .server import ServerThread, build_engine

    engine_cls = get_engine(cfg.engine)
    key = cfg.resolved_api_key()
    if not engine_cls.in_process:
        running = engine_cls.start(cfg.model, cfg.adapter, settings=cfg.settings, prompt=cfg.prompt,
                                   name=cfg.name, host=cfg.host, port=cfg.port, api_key=key)
        return Deployment(running.url, running.name, running.stop, api_key=key, wait_fn=running.wait)
    engine = build_engine(cfg)
    srv = ServerThread(create_app(engine, api_key=key, **cfg.app_limits()),
                       host=cfg.host, port=cfg.port).start()

    def stop() -> None:
        srv.stop()
        engine.close()

    return Deployment(srv.url, engine.name, stop, api_key=key, engine=engine, wait_fn=srv.wait)


class DeployMethod:
    """``rt.deploy.<engine>(**settings)``: settings are validated now, the model is given later."""

    name = "base"

    def __init__(self, **settings: Any):
        from .server import ServeConfig

        fixed = sorted(_FIXED & set(settings))
        if fixed:
            raise ConfigError(f"deploy setting(s) {fixed} are given to deploy(), not to rt.deploy.{self.name}(...)")
        self.settings = settings
        self.config("<model>", None, None)  # validate keys and values now: a typo fails here

    def config(self, model: str, adapter: str | None, prompt: Any):
        from .server import ServeConfig

        values: dict[str, Any] = {"port": 0, **self.settings, "model": str(model), "engine": self.name}
        if adapter is not None:
            values["adapter"] = str(adapter)
        if prompt is not None:
            values["prompt"] = PromptConfig.coerce(prompt)
        try:
            return ServeConfig.build(f"rt.deploy.{self.name}", **values)
        except ConfigError as exc:
            raise ConfigError(exc.message.replace("unknown key", "unknown deploy setting"), hint=exc.hint) from None

    def deploy(self, model: str, adapter: str | None = None, prompt: Any = None) -> Deployment:
        """Start serving ``model`` (+ ``adapter``) and return the running :class:`Deployment`."""
        return deploy(self.config(model, adapter, prompt))

    def __repr__(self) -> str:
        return f"rt.deploy.{self.name}({self.settings})"


_METHODS: dict[str, type[DeployMethod]] = {}


def get_deploy_method(name_or_cls: Any) -> type[DeployMethod]:
    """The deploy method of an engine, by name or as the class itself."""
    if isinstance(name_or_cls, type) and issubclass(name_or_cls, DeployMethod):
        return name_or_cls
    if not isinstance(name_or_cls, str):
        raise ConfigError(f"unknown deploy method {name_or_cls!r}; valid: {', '.join(ENGINES.names())}")
    name = name_or_cls.lower()
    if name not in ENGINES:
        raise ConfigError(ENGINES.unknown_message(name).replace("unknown engine", "unknown deploy method"))
    if name not in _METHODS:
        _METHODS[name] = type(name, (DeployMethod,), {"name": name, "__doc__": ENGINES.get(name).description})
    return _METHODS[name]


def __getattr__(name: str) -> Any:
    # rt.deploy.builtin, rt.deploy.vllm, rt.deploy.llamacpp ...: one per registered engine
    if name.startswith("_"):
        raise AttributeError(name)
    if name == "Vllm":  # LazyLLM's spelling
        return get_deploy_method("vllm")
    if name in ENGINES:
        return get_deploy_method(name)
    raise AttributeError(f"module 'ragtune.deploy' has no attribute {name!r}")
