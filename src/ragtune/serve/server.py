"""``ServeConfig`` (Python API = CLI flags = YAML) and running the builtin server with uvicorn."""
from __future__ import annotations

import os
import threading
import time
from typing import Any

from pydantic import Field

from ..core.errors import BackendError, ConfigError
from ..core.log import get_logger
from ..core.prompt import PromptConfig
from ..engine.base import ENGINES, EngineChoice, get_engine

log = get_logger(__name__)
API_KEY_ENV = "RAGTUNE_API_KEY"



class ServeConfig(EngineChoice):
    """``ragtune serve`` = ``rt.deploy.<engine>(...)`` = ``llm.deploy`` of a run: what to serve, on
    which engine, where. Engine settings (``dtype``, ``max_batch_size``, ``vllm_args`` ...) belong to
    the chosen engine's typed ``Settings`` and may be given flat here or under ``settings``; a setting
    the engine does not have is an error naming the engine and its settings."""

    model: str = Field(description="Model: bundled name, local dir, hub id, DIR/merged or a fine-tune output DIR.")
    adapter: str | None = Field(None, description="PEFT (LoRA) adapter dir applied on top of --model.")
    engine: str = Field("builtin", description="Engine: " + ", ".join(ENGINES.names()) + " (see docs/serve.md).")
    host: str = Field("127.0.0.1", description="Interface to bind; 0.0.0.0 exposes the server to the network.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port).")
    api_key: str | None = Field(None, description=f"Require 'Authorization: Bearer KEY' (or set ${API_KEY_ENV}).")
    name: str | None = Field(None, description="Model name clients send in the 'model' field.")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request sets none.")
    max_request_bytes: int = Field(4 * 2 ** 20, ge=1024, description="Largest request body accepted (bytes); "
                                   "larger is a 413 before any of it is parsed.")
    max_embedding_inputs: int = Field(2048, ge=1, description="Most texts in one /v1/embeddings request "
                                      "(OpenAI's limit); more is a 400.")
    allowed_hosts: list[str] | None = Field(None, description="Host header names served, '*' for any "
                                               "(default: loopback names when bound to loopback, else any). "
                                               "Guards a keyless local server against DNS rebinding.")
    prompt: PromptConfig = Field(default_factory=PromptConfig,
                                 description="Prompt settings over the fine-tune manifest's (system, drop_builtin_system, template).")

    def resolved_api_key(self) -> str | None:
        return self.api_key or os.environ.get(API_KEY_ENV) or None

    def resolved_allowed_hosts(self) -> list[str]:
        from .guards import default_allowed_hosts

        return list(self.allowed_hosts) if self.allowed_hosts is not None else default_allowed_hosts(self.host)

    def app_limits(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~ragtune.serve.app.create_app` this config sets."""
        return {"default_max_tokens": self.default_max_tokens, "max_request_bytes": self.max_request_bytes,
                "max_embedding_inputs": self.max_embedding_inputs, "allowed_hosts": self.resolved_allowed_hosts()}

    def execute(self):
        """The job: start serving; returns the running :class:`~ragtune.serve.deploy.Deployment`."""
        from .deploy import deploy

        return deploy(self)


def build_engine(cfg: ServeConfig):
    """Load the in-process engine for ``cfg.model`` (an embedding model gets the embedding engine)."""
    from ..models import resolve_model
    from ..models.source import resolve_source

    source = resolve_source(cfg.model, cfg.adapter, cfg.name)
    if source.adapter is None and resolve_model(source.model).kind == "embedding":
        from ..engine.embedding import EmbeddingEngine

        device = getattr(cfg.settings, "device", None)
        return EmbeddingEngine.load(source.model, device=device, name=cfg.name)
    engine_cls = get_engine(cfg.engine)
    if not engine_cls.in_process:
        raise ConfigError(f"engine '{cfg.engine}' runs as its own server; use deploy(), not build_engine()")
    return engine_cls.load(cfg.model, cfg.adapter, settings=cfg.settings, prompt=cfg.prompt, name=cfg.name)


class ServerThread:
    """The real uvicorn server in a background thread (tests, notebooks, ``rt.deploy.builtin``).

    >>> with ServerThread(create_app(engine), port=0) as srv:
    ...     httpx.get(srv.url + "/health")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                     timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(self.config)
        self.host = host
        self.thread = threading.Thread(target=self.server.run, name="ragtune-uvicorn", daemon=True)

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise BackendError(f"the HTTP server failed to start on {self.host}:{self.config.port}",
                                   hint="is the port already in use?")
            if time.monotonic() > deadline:
                raise BackendError(f"the HTTP server did not start within {timeout:.0f}s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C reaches the caller, who stops it)."""
        while self.thread.is_alive():
            self.thread.join(0.5)

    def __enter__(self) -> "ServerThread":
        return self.start() if not self.thread.is_alive() else self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(cfg: ServeConfig) -> None:
    """Run in the foreground until Ctrl-C (what ``ragtune serve`` does)."""
    from .deploy import deploy

    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.resolved_api_key():
        log.warning("serving on %s without an API key: anyone on the network can use it", cfg.host)
    dep = deploy(cfg)
    print(f"ragtune: serving '{dep.model_name}' ({cfg.engine}) at {dep.url}/v1", flush=True)
    try:
        dep.wait()
    finally:
        dep.stop()
