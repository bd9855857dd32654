"""``TrainableModule``: the fluent one-stop API (fine-tune -> deploy -> infer the eval set).

    llm = (rt.TrainableModule("gemma-3-270m")
           .mode("finetune").trainset("train.json")
           .finetune_method(rt.finetune.lora, learning_rate=1e-4, num_train_epochs=2)
           .prompt(dict(system="You are a helpful assistant.", drop_builtin_system=True))
           .deploy_method(rt.deploy.builtin))
    llm.evalset(items); llm.update(); llm.eval_result

``TrainableModule(base, tuned_dir)`` serves an existing fine-tune output (adapter or merged).
The same object wraps an embedding model: ``__call__`` then returns embeddings, ``update()``
fine-tunes it with ``rt.finetune.embedding``, and ``Document(embed=module)`` uses it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

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
        self._prompt = PromptConfig()
        self._prompter: Any = None
        self._deploy: Any = None
        self._deploy_params: dict[str, Any] = {}
        self._evalset: list | str | None = None
        self._infer_params: dict[str, Any] = {}
        self._deployment = None
        self._embedder = None
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
        ``rt.finetune.lora(learning_rate=...)`` or a name (``"lora"``). Params are validated now."""
        if isinstance(method, tuple):
            if len(method) != 2 or not isinstance(method[1], dict):
                raise ConfigError("finetune_method tuple form is (method, {params})")
            method, extra = method
            params = {**extra, **params}
        from .. import finetune as ft

        if isinstance(method, str):
            method = ft.get_method(method)
        if isinstance(method, ft.BoundMethod):
            params = {**method.cfg.model_dump(exclude_unset=True), **params}
            method = method.method
        if not hasattr(method, "config"):
            raise ConfigError(f"{method!r} is not a fine-tune method",
                              hint="use rt.finetune.lora | freeze | full | llamafactory | embedding | flagembedding")
        params.pop("launcher", None) if params.get("launcher") in (None, "local") else None
        method.config(**_placeholders(method), **params)          # validate keys/types up front
        self._method, self._params = method, params
        return self

    def prompt(self, prompt: Any) -> "TrainableModule":
        """A system string, ``dict(system=..., drop_builtin_system=...)``, a :class:`PromptConfig`,
        or a RAG prompter (``rt.rag.ChatPrompter(instruction, extra_keys=[...])``) that turns the
        pipeline's ``{context_str, query}`` dict into messages."""
        if hasattr(prompt, "messages") and callable(prompt.messages):
            self._prompter = prompt
            return self
        self._prompt = PromptConfig.coerce(prompt)
        if self._deployment is not None and hasattr(self._deployment, "engine") and self._deployment.engine:
            self._deployment.engine.prompt_cfg = self._prompt
        return self

    def deploy_method(self, method: Any, **params: Any) -> "TrainableModule":
        from ..serve.deploy import get_deploy_method

        cls = get_deploy_method(method)
        cls(**params)                                            # validate settings now
        self._deploy, self._deploy_params = cls, params
        return self

    def evalset(self, data: str | os.PathLike | Sequence[Any], **infer_params: Any) -> "TrainableModule":
        """Items (``{context, question, ...}``, ``{instruction}``, ``{messages}``, ``{prompt}`` or plain
        strings) or a file; ``infer_params`` are ``ragtune infer`` settings (max_tokens, batch_size...)."""
        from ..infer.runner import InferConfig

        unknown = set(infer_params) - set(InferConfig.model_fields) | ({"evalset", "output", "model", "url"} & set(infer_params))
        if unknown:
            raise ConfigError(f"unknown evalset/inference setting(s) {sorted(unknown)}",
                              hint="valid: max_tokens, batch_size, temperature, top_p, stop, seed, template")
        self._infer_params = infer_params
        if isinstance(data, (str, os.PathLike)):
            from ..infer.runner import load_evalset

            self._evalset = load_evalset(data)
        else:
            self._evalset = list(data)
        return self

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
            self._finetune()
        self.start()
        if self._evalset is not None and self.kind == "llm":
            self.eval_result = self._infer_evalset()
        return self

    def start(self) -> "TrainableModule":
        self.stop()
        if self.kind == "embedding":
            from sentence_transformers import SentenceTransformer

            from ..models import resolve_model

            self._embedder = SentenceTransformer(str(resolve_model(self.model_path).path), device="cpu")
        else:
            from ..serve.deploy import builtin

            method = (self._deploy or builtin)(**self._deploy_params)
            self._deployment = method.deploy(self._served_model(), prompt=self._prompt)
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

    def embed(self, texts: str | Sequence[str]) -> list[float] | list[list[float]]:
        if self.kind != "embedding":
            raise UsageError(f"{self.base} is an LLM, not an embedding model")
        if self._embedder is None:
            self.start()
        single = isinstance(texts, str)
        vecs = self._embedder.encode([texts] if single else list(texts), normalize_embeddings=True)
        return vecs[0].tolist() if single else vecs.tolist()

    def client(self):
        if self.kind != "llm":
            raise UsageError("client() is for LLMs; call the module directly to embed texts")
        if self._deployment is None:
            self.start()
        engine = getattr(self._deployment, "engine", None)
        if engine is not None:                      # builtin: call the engine in-process, no HTTP hop
            from ..engine.client import LocalLLM

            return LocalLLM(engine)
        return self._deployment.client()

    @property
    def url(self) -> str | None:
        return self._deployment.url if self._deployment is not None else None

    # -- internals --------------------------------------------------------------------------------
    def _served_model(self) -> str:
        return self.model_path

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

    def _finetune(self) -> None:
        if self._trainset is None:
            raise UsageError("mode('finetune') needs training data", hint="call .trainset(path_or_records) before .update()")
        kind = self.kind
        if self._method is None:
            from .. import finetune as ft

            self._method = ft.get_method("embedding" if kind == "embedding" else "lora")
        method_kind = getattr(self._method, "kind", "llm")
        if method_kind != kind:
            raise UsageError(f"{self._method.name} fine-tunes {method_kind} models but {self.base} is an {kind} model",
                             hint="use rt.finetune.embedding for embedders, rt.finetune.lora/freeze/full for LLMs")
        out = Path(self._output_dir())
        train = self._train_file(out)
        self.stop()
        self.finetune_result = _run_method(self._method, self._params, self.base, train, str(out), self._prompt)
        self._kind = kind
        log.info("fine-tune finished: %s", out)

    def _infer_evalset(self) -> list[str]:
        """Runs exactly what ``ragtune infer`` runs (same item -> prompt rules, resumable side file)."""
        from ..infer.runner import InferConfig, run_infer
        from ..core.io import atomic_write_json

        out = Path(self.target_path) if self.target_path else Path(self._output_dir())
        out.mkdir(parents=True, exist_ok=True)
        items = [it if isinstance(it, dict) else {"prompt": it} for it in self._evalset]
        evalset = atomic_write_json(out / "evalset.json", items)
        engine = getattr(self._deployment, "engine", None)
        settings = {"max_tokens": self._infer_params.get("max_tokens", 64), **self._infer_params,
                    "system": self._prompt.system, "drop_builtin_system": self._prompt.drop_builtin_system}
        cfg = InferConfig.build(evalset=str(evalset), output=str(out / "predictions.json"),
                                **({} if engine is not None else {"url": self._deployment.url}),
                                **({"model": self.model_path} if engine is not None else {}), **settings)
        rows = run_infer(cfg, engine=engine)
        return [r["prediction"] for r in rows]

    def __repr__(self) -> str:
        return f"TrainableModule(base={self.base!r}, target_path={self.target_path!r}, mode={self._mode!r})"


def _placeholders(method: Any) -> dict[str, Any]:
    """Required path fields filled with dummies so params can be validated before data exists."""
    fields = getattr(method, "config_cls", None)
    fields = getattr(fields, "model_fields", {}) if fields is not None else {}
    values = {}
    for name in ("base_model", "base", "train", "output_dir", "output"):
        if name in fields:
            values[name] = "<placeholder>"
    return values


def _run_method(method: Any, params: dict, base: str, train: str, out: str, prompt: PromptConfig):
    fields = method.config_cls.model_fields
    values = dict(params)
    values["base_model" if "base_model" in fields else "base"] = base
    values["output_dir" if "output_dir" in fields else "output"] = out
    values["train"] = train
    if "system" in fields and prompt.system is not None:
        values.setdefault("system", prompt.system)
    if "drop_builtin_system" in fields and prompt.drop_builtin_system:
        values.setdefault("drop_builtin_system", True)
    cfg = method.config(**values)
    if hasattr(method, "run") and not hasattr(method, "backend"):
        from ..finetune import BoundMethod

        return BoundMethod(method, cfg).run()
    from ..finetune.embed.train import finetune_embedding

    return finetune_embedding(cfg)
