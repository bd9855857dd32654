"""``ServeConfig`` (Python API = CLI flags = YAML) and running the builtin server with uvicorn."""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Literal

from pydantic import Field

from ..core.config import Config
from ..core.errors import BackendError, ConfigError
from ..core.log import get_logger

log = get_logger(__name__)
API_KEY_ENV = "RAGTUNE_API_KEY"


class ServeConfig(Config):
    model: str = Field(description="Model: bundled name, local dir, hub id, DIR/merged or a fine-tune output DIR.")
    adapter: str | None = Field(None, description="PEFT (LoRA) adapter dir applied on top of --model.")
    engine: Literal["builtin", "vllm"] = Field("builtin", description="builtin (transformers) or vllm (GPU).")
    host: str = Field("127.0.0.1", description="Interface to bind; 0.0.0.0 exposes the server to the network.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port).")
    api_key: str | None = Field(None, description=f"Require 'Authorization: Bearer KEY' (or set ${API_KEY_ENV}).")
    name: str | None = Field(None, description="Model name clients send in the 'model' field.")
    system: str | None = Field(None, description="System prompt (overrides the fine-tune manifest).")
    drop_builtin_system: bool | None = Field(None, description="Send an empty system prompt instead of the template's built-in one.")
    template: Literal["auto", "chat", "plain"] | None = Field(None, description="Prompt template choice.")
    dtype: str = Field("auto", description="auto (bf16 where native), bf16, fp16, fp32.")
    device: str | None = Field(None, description="cpu, cuda, cuda:1 ... (default: cuda if available).")
    max_batch_size: int = Field(16, ge=1, description="Most requests run together in one batch.")
    batch_wait_ms: float = Field(10.0, ge=0, description="How long the batcher waits to fill a batch.")
    max_model_len: int | None = Field(None, ge=16, description="Context limit (prompt + max_tokens); default: the model's.")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request sets none.")
    vllm_args: list[str] = Field(default_factory=list, description="Extra arguments passed to `vllm serve`.")
    startup_timeout: float = Field(900.0, gt=0, description="vllm: seconds to wait for /health.")
    max_restarts: int = Field(2, ge=0, description="vllm: restarts after a crash before giving up.")

    def resolved_api_key(self) -> str | None:
        return self.api_key or os.environ.get(API_KEY_ENV) or None


def build_engine(cfg: ServeConfig):
    """Load the engine for ``cfg.model`` (an embedding model gets the embedding engine)."""
    from ..models import resolve_model
    from ..models.source import merge_prompt, resolve_source

    source = resolve_source(cfg.model, cfg.adapter, cfg.name)
    if source.adapter is None and resolve_model(source.model).kind == "embedding":
        from ..engine.embedding import EmbeddingEngine

        return EmbeddingEngine.load(source.model, device=cfg.device, name=cfg.name)
    from ..engine.builtin import BuiltinEngine

    prompt = merge_prompt(source.prompt, cfg.system, cfg.drop_builtin_system, cfg.template)
    return BuiltinEngine.load(source.model, source.adapter, dtype=cfg.dtype, device=cfg.device, prompt=prompt,
                              name=source.name, max_batch_size=cfg.max_batch_size,
                              batch_wait_ms=cfg.batch_wait_ms, max_model_len=cfg.max_model_len)


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

    def __enter__(self) -> "ServerThread":
        return self.start() if not self.thread.is_alive() else self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(cfg: ServeConfig) -> None:
    """Run in the foreground until Ctrl-C (what ``ragtune serve`` does)."""
    if cfg.engine == "vllm":
        from ..engine.vllm import VllmServer

        VllmServer(cfg).run_forever()
        return
    import uvicorn

    from .app import create_app

    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.resolved_api_key():
        log.warning("serving on %s without an API key: anyone on the network can use it", cfg.host)
    engine = build_engine(cfg)
    app = create_app(engine, api_key=cfg.resolved_api_key(), default_max_tokens=cfg.default_max_tokens)
    print(f"ragtune: serving '{engine.name}' ({engine.kind}) at http://{cfg.host}:{cfg.port}/v1", flush=True)
    try:
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
    finally:
        engine.close()

