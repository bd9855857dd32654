"""``TrainableModule``: the fluent one-stop API, a builder of the same typed jobs that ``ragtune run``
stages and the CLI commands run (:mod:`ragtune.workflow.jobs`).

    llm = (rt.TrainableModule("gemma-3-270m")
           .mode("finetune").trainset("train.json")
           .finetune_method(rt.finetune.lora, learning_rate=1e-4, num_train_epochs=2)
           .prompt(dict(system="You are a helpful assistant.", drop_builtin_system=True))
           .deploy_method(rt.deploy.builtin))
    llm.evalset(items); llm.update(); llm.eval_result

``finetune_job()``, ``deploy_job()`` and ``infer_job()`` return the jobs it would run; ``update()``
runs them: fine-tune (mode 'finetune') -> deploy -> infer the eval set. ``TrainableModule(base,
tuned_dir)`` serves an existing fine-tune output (adapter or merged). The same object wraps an
embedding model: ``__call__`` / ``embed()`` then return query embeddings (the query instruction saved
with a tuned embedder applied, exactly as the ``Retriever`` does), ``update()`` fine-tunes it with
``rt.finetune.embedding``, and ``Document(embed=module)`` uses it.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, RagtuneError
from ..core.log import get_logger
from ..core.prompt import PromptConfig

log = get_logger(__name__)
MODES = ("finetune", "server")


class UsageError(RagtuneError):
    """TrainableModule methods called in an order that cannot work; the message says what to do."""


class TrainableModule:
    def __init__(self, base: str | os.PathLike, target_path: str | os.PathLike | None = None):
        self.base = os.fspath(base)
        self.target_path = os.fspath(target_path) if target_path is not None else None
        self._mode = "server"
        self._trainset: str | list | None = None
        self._method: Any = None
        self._params: dict[str, Any] = {}
        self._launcher: dict[str, Any] = {}
        self._prompt = PromptConfig()
        self._prompter: Any = None
        self._deploy: Any = None
        self._evalset: list | None = None
        self._infer_params: dict[str, Any] = {}
        self._deployment: Any = None
        self._embedder: Any = None
        self._kind: str | None = None
        self.finetune_result: Any = None
        self.eval_result: list[str] | None = None
        self.version = 0          # bumps whenever the served weights change (Retriever.update watches it)

    # -- configuration (fluent) ---------------------------------------------------------------
    def mode(self, mode: str) -> "TrainableModule":
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
        self._mode = mode
        return self

    def trainset(self, data: str | os.PathLike | Sequence[dict]) -> "TrainableModule":
        if isinstance(data, (str, os.PathLike)):
            if not Path(data).exists():
                raise ConfigError(f"train set {data} does not exist")
            self._trainset = os.fspath(data)
        else:
            self._trainset = list(data)
            if not self._trainset:
                raise ConfigError("train set is empty")
        return self

    def finetune_method(self, method: Any, **params: Any) -> "TrainableModule":
        """``(rt.finetune.lora, learning_rate=1e-4)``, ``((rt.finetune.lora, {...}))``, a bound
        ``rt.finetune.lora(learning_rate=...)`` or a name (``"lora"``). Params are validated now;
        ``launcher=`` (``{"type": "torchrun", "nproc_per_node": 2}``) runs the fine-tune elsewhere."""
        from ..finetune import BoundMethod, get_method

        if isinstance(method, tuple):
            if len(method) != 2 or not isinstance(method[1], dict):
                raise ConfigError("finetune_method tuple form is (method, {params})")
            method, extra = method
            params = {**extra, **params}
        if isinstance(method, BoundMethod):
            params = {**method.params, **params}
        method = get_method(method)
        launcher = params.pop("launcher", None) or {}
        if isinstance(launcher, str):
            launcher = {"type": launcher}
        from ..launch import LauncherConfig

        LauncherConfig.build("launcher", **launcher)
        method(**params)                                          # validate keys/types up front
        self._method, self._params, self._launcher = method, params, launcher
        return self

    def prompt(self, prompt: Any) -> "TrainableModule":
        """A system string, ``dict(system=..., drop_builtin_system=...)``, a :class:`PromptConfig`,
        or a RAG prompter (``rt.ChatPrompter(instruction, extra_keys=[...])``) that turns the
        pipeline's ``{context_str, query}`` dict into messages. Applies to training (saved with the
        model) and to every request this module sends; other clients of a shared engine keep theirs."""
        if isinstance(prompt, object) and hasattr(prompt, "messages") and callable(prompt.messages):
            self._prompter = prompt
            return self
        self._prompt = PromptConfig.coerce(prompt)
        return self

    def deploy_method(self, method: Any, **params: Any) -> "TrainableModule":
        from ..serve.deploy import get_deploy_method

        self._deploy = get_deploy_method(method)(**params)        # validates the settings now
        return self

    def evalset(self, data: str | os.PathLike | Sequence[Any], **infer_params: Any) -> "TrainableModule":
        """Items (``{context, question, ...}``, ``{instruction}``, ``{messages}``, ``{prompt}`` or plain
        strings) or a file; ``infer_params`` are ``ragtune infer`` settings (max_tokens, batch_size...)."""
        from ..infer.runner import InferSettings, load_evalset

        InferSettings.build("evalset settings", **infer_params)   # unknown keys fail here
        self._infer_params = infer_params
        self._evalset = load_evalset(data) if isinstance(data, (str, os.PathLike)) else list(data)
        return self

    # -- the jobs -------------------------------------------------------------------------------------
    def finetune_job(self):
        """The :class:`~ragtune.workflow.jobs.FinetuneJob` ``update()`` runs in finetune mode."""
        from ..finetune import get_method
        from .jobs import FinetuneJob

        if self._trainset is None:
            raise UsageError("mode('finetune') needs training data",
                             hint="call .trainset(path_or_records) before .update()")
        method = self._method or get_method("embedding" if self.kind == "embedding" else "lora")
        if method.kind != self.kind:
            raise UsageError(f"{method.name} fine-tunes {method.kind} models but {self.base} is an {self.kind} model",
                             hint="use rt.finetune.embedding for embedders, rt.finetune.lora/freeze/full for LLMs")
        out = Path(self._output_dir())
        values = {**self._params, "base": self.base, "train": self._train_file(out), "output": str(out)}
        if "prompt" in method.config_cls.model_fields:
            values["prompt"] = self._prompt.over(PromptConfig.coerce(self._params.get("prompt")))
        return FinetuneJob(config=method.config(**values), launcher=self._launcher)

    def deploy_job(self):
        """The :class:`~ragtune.serve.server.ServeConfig` of the deployment (an LLM)."""
        from ..serve.deploy import get_deploy_method

        method = self._deploy or get_deploy_method("builtin")()
        return method.config(self.model_path, None, self._prompt)

    def infer_job(self, engine_in_process: bool = True):
        """The :class:`~ragtune.infer.runner.InferConfig` that infers the eval set."""
        from ..core.io import atomic_write_json
        from ..infer.runner import InferConfig

        if self._evalset is None:
            raise UsageError("no eval set", hint="call .evalset(items_or_file) first")
        out = Path(self._output_dir())
        out.mkdir(parents=True, exist_ok=True)
        items = [it if isinstance(it, dict) else {"prompt": it} for it in self._evalset]
        evalset = atomic_write_json(out / "evalset.json", items)
        target: dict[str, Any] = {"model": self.model_path} if engine_in_process else {"url": self.url}
        return InferConfig.build("evalset settings", evalset=str(evalset), output=str(out / "predictions.json"),
                                 prompt=self._prompt, **target, **{"max_tokens": 64, **self._infer_params})

    # -- what kind of model ----------------------------------------------------------------------
    @property
    def kind(self) -> str:
        if self._kind is None:
            from ..models import resolve_model

            self._kind = resolve_model(self.base).kind
        return self._kind

    @property
    def model_path(self) -> str:
        """What is served: the fine-tune output when there is one, else the base."""
        if self.target_path and Path(self.target_path).exists() and any(Path(self.target_path).iterdir()):
            return self.target_path
        return self.base

    # -- actions ----------------------------------------------------------------------------------
    def update(self) -> "TrainableModule":
        """finetune (mode 'finetune') -> deploy -> infer the eval set into ``eval_result``."""
        if self._mode == "finetune":
            job = self.finetune_job()
            self.stop()
            self.finetune_result = job.execute()
            from ..launch import DryRun

            if isinstance(self.finetune_result, DryRun):   # a Slurm dry run: nothing to deploy yet
                log.info("dry run: %s written, not submitted; nothing deployed", self.finetune_result.script)
                return self
            log.info("fine-tune finished: %s", job.config.output)
        self.start()
        if self._evalset is not None and self.kind == "llm":
            self.eval_result = self._infer_evalset()
        return self

    def start(self) -> "TrainableModule":
        self.stop()
        if self.kind == "embedding":
            from ..models.embedder import SentenceTransformerEmbedder

            self._embedder = SentenceTransformerEmbedder.load(self.model_path)
        else:
            self._deployment = self.deploy_job().execute()
        self.version += 1
        return self

    def stop(self) -> None:
        if self._deployment is not None:
            self._deployment.stop()
            self._deployment = None
        self._embedder = None

    def __call__(self, x: Any, **kwargs: Any) -> Any:
        if self._deployment is None and self._embedder is None:
            self.start()
        if self._embedder is not None:
            return self.embed(x)
        if self._prompter is not None:
            x = self._prompter.messages(x)
        return self.client()(x, **kwargs)

    @property
    def embedder(self):
        """The :class:`~ragtune.models.embedder.Embedder` this module serves (embedding models)."""
        if self.kind != "embedding":
            raise UsageError(f"{self.base} is an LLM, not an embedding model")
        if self._embedder is None:
            self.start()
        return self._embedder

    def embed(self, texts: str | Sequence[str]) -> list[float] | list[list[float]]:
        """Query embeddings: with the query instruction saved with a tuned embedder, the same
        vectors the ``Retriever`` uses (``embed_documents`` for passages)."""
        single = isinstance(texts, str)
        vecs = self.embedder.embed_queries([texts] if single else list(texts))
        return vecs[0].tolist() if single else vecs.tolist()

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return self.embedder.embed_documents(list(texts)).tolist()

    def client(self):
        """An LLM client with this module's prompt: in-process for in-process engines, else HTTP."""
        if self.kind != "llm":
            raise UsageError("client() is for LLMs; call the module directly to embed texts")
        if self._deployment is None:
            self.start()
        engine = self._deployment.engine
        if engine is not None:                      # in-process engine: no HTTP hop
            from ..engine.client import LocalLLM

            return LocalLLM(engine, prompt=self._prompt)
        return self._deployment.client().prompt(self._prompt)

    @property
    def url(self) -> str | None:
        return self._deployment.url if self._deployment is not None else None

    # -- internals --------------------------------------------------------------------------------
    def _output_dir(self) -> str:
        if self.target_path is None:
            from ..core.io import new_run_id
            from ..core.paths import ragtune_home

            self.target_path = str(ragtune_home() / "runs" / f"{Path(self.base).name}-{new_run_id()}")
        return self.target_path

    def _train_file(self, out: Path) -> str:
        if isinstance(self._trainset, str):
            return self._trainset
        from ..core.io import atomic_write_json

        return str(atomic_write_json(out.parent / f".{out.name}.trainset.json", self._trainset))

    def _infer_evalset(self) -> list[str]:
        """Runs exactly what ``ragtune infer`` runs (same item -> prompt rules, resumable side file)."""
        engine = self._deployment.engine
        job = self.infer_job(engine_in_process=engine is not None)
        return [r["prediction"] for r in job.execute(engine=engine)]

    def __repr__(self) -> str:
        return f"TrainableModule(base={self.base!r}, target_path={self.target_path!r}, mode={self._mode!r})"
