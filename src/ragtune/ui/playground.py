"""The Retrieval and Chat pages: models loaded in the UI process on first use and kept (a few at a
time), retrieval through ``ragtune.rag`` (Document + node group + Retriever), answers streamed
token by token from the builtin engine or relayed from an OpenAI-compatible server.

The RAG path is the chapter's pipeline, step by step so it can stream: retriever -> formatter
``{context_str, query}`` -> ``ChatPrompter(instruction, extra_keys=["context_str"])`` -> the LLM.
"""
from __future__ import annotations

import asyncio
import collections
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import Field, field_validator

from ..core.config import Config
from ..core.errors import ConfigError
from ..core.log import get_logger
from ..engine.client import ServerUrl

log = get_logger(__name__)
DEFAULT_INSTRUCTION = ("You will act as an AI question-answering assistant. Answer the question from the "
                       "given context.")


class RagOptions(Config):
    kb: str = Field(description="Knowledge base: a file or a directory of .txt/.md/.json/.jsonl files.")
    embed: str = Field("all-MiniLM-L6-v2", description="Embedder: a name or a directory.")
    topk: int = Field(3, ge=1, le=50, description="Chunks put into the prompt.")
    splitter: Literal["line", "sentence", "none"] = Field("line", description="How the KB is split into chunks.")
    instruction: str = Field(DEFAULT_INSTRUCTION, description="The system instruction of the RAG prompt.")


class RetrievalRequest(Config):
    kb: str
    question: str = Field(min_length=1)
    embed_base: str = "all-MiniLM-L6-v2"
    embed_tuned: str | None = None
    topk: int = Field(5, ge=1, le=50)
    splitter: Literal["line", "sentence", "none"] = "line"
    reference: list[str] = Field(default_factory=list, description="Reference passage(s) to highlight.")


class ChatTarget(Config):
    kind: Literal["local", "remote"] = "local"
    model: str | None = Field(None, description="local: a model name, dir or fine-tune output; remote: the model name.")
    url: ServerUrl | None = Field(None, description="remote: OpenAI-compatible base URL (…/v1).")
    api_key: str | None = Field(None, description="remote: API key (sent to that URL only, never stored).")
    api_key_env: str | None = Field(None, description="remote: environment variable holding the key.")

    @field_validator("url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value


class ChatRequest(Config):
    target: ChatTarget
    messages: list[dict[str, str]] = Field(min_length=1)
    rag: RagOptions | None = None
    max_tokens: int = Field(128, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0, le=2)

    @field_validator("messages")
    @classmethod
    def _turns(cls, value: list[dict[str, str]]) -> list[dict[str, str]]:
        for i, m in enumerate(value):
            if set(m) != {"role", "content"} or m["role"] not in ("system", "user", "assistant"):
                raise ValueError(f"messages[{i}] must be {{role: system|user|assistant, content}}")
        if value[-1]["role"] != "user":
            raise ValueError("the last message must be the user's question")
        return value


def mark(text: str, references: list[str]) -> str | None:
    """'exact' when a chunk is a reference passage (what recall@k counts), 'partial' when one
    contains the other, else None."""
    t = text.strip()
    refs = [r.strip() for r in references if r and r.strip()]
    if t in refs:
        return "exact"
    if any(t in r or r in t for r in refs):
        return "partial"
    return None


class Playground:
    """Loaded models and indexed knowledge bases, shared by every tab (loading is the slow part)."""

    def __init__(self, max_engines: int = 3):
        self.max_engines = max_engines
        self._engines: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._docs: dict[tuple[str, str, str], Any] = {}
        self._lock = threading.Lock()
        self._loading: dict[Any, threading.Lock] = collections.defaultdict(threading.Lock)
        # one model load at a time in this process: transformers/accelerate build models on the
        # meta device by patching torch globally, so two loads in two threads corrupt each other
        # ("Cannot copy out of meta tensor")
        self._load_one_at_a_time = threading.Lock()

    # -- retrieval ------------------------------------------------------------------------------------
    def document(self, kb: str, embed: str, splitter: str):
        key = (str(Path(kb).expanduser().resolve()), embed, splitter)
        with self._loading[key]:
            if key not in self._docs:
                from ..rag import Document

                doc = Document(key[0], embed=embed)
                if splitter != "none":
                    doc.create_node_group("chunks", transform=splitter)
                with self._load_one_at_a_time:
                    doc.embedder                      # noqa: B018 - loads the embedder now
                self._docs[key] = doc
            return self._docs[key]

    def retrieve(self, kb: str, embed: str, question: str, topk: int, splitter: str) -> list[dict[str, Any]]:
        from ..rag import ROOT, Retriever

        doc = self.document(kb, embed, splitter)
        retriever = Retriever(doc, "chunks" if splitter != "none" else ROOT, similarity="cosine", topk=topk)
        with self._loading[("retrieve", id(doc))]:     # one embedding pass per KB at a time
            nodes = retriever.retrieve(question)
        return [{"text": n.text, "score": round(float(cast(float, n.score)), 4), "source": n.metadata.get("source")}
                for n in nodes]

    def compare_retrieval(self, req: RetrievalRequest) -> dict[str, Any]:
        columns = []
        for label, embed in (("base", req.embed_base), ("tuned", req.embed_tuned)):
            if not embed:
                continue
            started = time.perf_counter()
            hits = self.retrieve(req.kb, embed, req.question, req.topk, req.splitter)
            for h in hits:
                h["match"] = mark(h["text"], req.reference)
            rank = next((i + 1 for i, h in enumerate(hits) if h["match"] == "exact"), None)
            columns.append({"label": label, "embed": embed, "hits": hits, "reference_rank": rank,
                            "seconds": round(time.perf_counter() - started, 3)})
        return {"question": req.question, "reference": req.reference, "columns": columns}

    # -- LLMs ------------------------------------------------------------------------------------------
    def engine(self, model: str):
        with self._loading[("engine", model)]:
            with self._lock:
                if model in self._engines:
                    self._engines.move_to_end(model)
                    return self._engines[model]
            from ..engine.builtin import BuiltinEngine

            with self._load_one_at_a_time:
                engine = BuiltinEngine.load(model)
            with self._lock:
                self._engines[model] = engine
                while len(self._engines) > self.max_engines:
                    _, old = self._engines.popitem(last=False)
                    old.close()
            return engine

    def is_loaded(self, model: str) -> bool:
        return model in self._engines

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()


def check_local_model(model: str | None) -> str:
    """Resolve a local model reference now, so a typo is a 400 with the reason, not a broken stream."""
    from ..models import resolve_model
    from ..models.source import resolve_source

    if not model:
        raise ConfigError("target.model: which model? (a bundled name, a directory or a fine-tune output)")
    source = resolve_source(model)
    resolve_model(source.model)
    return model


def _sse(event: dict[str, Any]) -> str:
    return "data: " + json.dumps(event, ensure_ascii=False) + "\n\n"


async def chat_events(pg: Playground, req: ChatRequest) -> AsyncIterator[str]:
    """The SSE stream of one answer: status, retrieved context (RAG), deltas, then done (or error)."""
    started = time.perf_counter()
    messages = [dict(m) for m in req.messages]
    try:
        if req.rag is not None:
            yield _sse({"status": f"retrieving from {req.rag.kb}"})
            hits = await asyncio.to_thread(pg.retrieve, req.rag.kb, req.rag.embed, messages[-1]["content"],
                                           req.rag.topk, req.rag.splitter)
            yield _sse({"context": hits})
            from ..core.prompt import ChatPrompter

            prompter = ChatPrompter(req.rag.instruction, extra_keys=["context_str"])
            messages = [*messages[:-1], *prompter.messages({"context_str": [h["text"] for h in hits],
                                                             "query": messages[-1]["content"]})]
            if sum(m["role"] == "system" for m in messages) > 1:
                raise ConfigError("a RAG chat sets its own system turn: remove the system message")
        if req.target.kind == "local":
            async for event in _local(pg, req, messages):
                yield event
        else:
            async for event in _remote(req, messages):
                yield event
    except Exception as exc:  # the stream has started: any error goes to the page in-stream
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        log.warning("chat failed: %s", message)
        yield _sse({"error": message})
        return
    yield _sse({"done": True, "seconds": round(time.perf_counter() - started, 3)})


async def _local(pg: Playground, req: ChatRequest, messages: list[dict[str, str]]) -> AsyncIterator[str]:
    from ..engine.base import SamplingParams

    model = str(req.target.model)
    if not pg.is_loaded(model):
        yield _sse({"status": f"loading {model}"})
    engine = await asyncio.to_thread(pg.engine, model)
    ids = await asyncio.to_thread(engine.encode_chat, messages)
    params = engine.chat_params(SamplingParams(max_tokens=req.max_tokens, temperature=req.temperature))
    loop = asyncio.get_running_loop()
    deltas: asyncio.Queue[str] = asyncio.Queue()
    future = engine.submit(ids, params, on_delta=lambda d: loop.call_soon_threadsafe(deltas.put_nowait, d))
    yield _sse({"status": f"generating ({len(ids)} prompt tokens)", "model": engine.name})
    wrapped = asyncio.wrap_future(future)
    while True:
        getter = asyncio.ensure_future(deltas.get())
        done, _ = await asyncio.wait({getter, wrapped}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            yield _sse({"delta": getter.result()})
            continue
        getter.cancel()
        break
    while not deltas.empty():
        yield _sse({"delta": deltas.get_nowait()})
    result = wrapped.result()
    yield _sse({"finish_reason": result.finish_reason, "completion_tokens": result.completion_tokens,
                "prompt_tokens": result.prompt_tokens})


async def _remote(req: ChatRequest, messages: list[dict[str, str]]) -> AsyncIterator[str]:
    import httpx

    from ..engine.client import parse_stream_line

    t = req.target
    key = t.api_key or (os.environ.get(t.api_key_env) if t.api_key_env else None)
    if t.api_key_env and not key:
        raise ConfigError(f"target.api_key_env: environment variable {t.api_key_env} is not set")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=str(t.url), headers=headers, timeout=httpx.Timeout(120, connect=10)) as client:
        model = t.model
        if not model:
            resp = await client.get("/models")
            resp.raise_for_status()
            model = resp.json()["data"][0]["id"]
        body = {"model": model, "messages": messages, "max_tokens": req.max_tokens,
                "temperature": req.temperature, "stream": True}
        yield _sse({"status": f"asking {t.url}", "model": model})
        async with client.stream("POST", "/chat/completions", json=body) as resp:
            if resp.status_code >= 400:
                text = (await resp.aread()).decode("utf-8", errors="replace")
                raise ConfigError(f"{t.url} answered HTTP {resp.status_code}: {text[:500]}")
            finish = None
            async for line in resp.aiter_lines():
                event = parse_stream_line(line, str(t.url))
                if event is None:
                    continue
                if event.done:
                    break
                if event.text:
                    yield _sse({"delta": event.text})
                finish = event.finish_reason or finish
        yield _sse({"finish_reason": finish})
