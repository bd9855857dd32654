"""The OpenAI-compatible HTTP API (FastAPI) in front of an engine.

Endpoints: ``/v1/chat/completions`` (SSE streaming or not), ``/v1/completions``, ``/v1/embeddings``
(embedding models), ``/v1/models``, ``/health``, and ``/metrics`` (JSON: batch-size histogram of the
dynamic batcher, request counters). Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}`` with matching status codes.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import time
import uuid
from typing import Any, Literal, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core.errors import RagtuneError
from ..engine.builtin import PromptTooLongError, SamplingParams
from ..engine.constrained import request_format

# Fields OpenAI clients may send that this server cannot honour: rejected, never silently ignored.
_UNSUPPORTED = ("logprobs", "top_logprobs", "tools", "tool_choice", "functions",
                "logit_bias", "best_of", "suffix", "echo")


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: Union[str, list[str], None] = None
    seed: int | None = None
    stream: bool = False
    n: int = 1


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: Union[str, list[dict[str, Any]]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text":
                raise APIError(400, f"unsupported content part type {part.get('type')!r}; only 'text'",
                               param="messages")
            parts.append(str(part.get("text", "")))
        return "".join(parts)


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str]]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    input: Union[str, list[str]]
    encoding_format: Literal["float"] = "float"


def create_app(engine: Any, *, api_key: str | None = None, default_max_tokens: int = 256) -> FastAPI:
    """``engine`` is a :class:`BuiltinEngine` (kind "llm") or :class:`EmbeddingEngine` ("embedding")."""
    app = FastAPI(title="ragtune", version="1")
    app.state.engine = engine
    app.state.counters = {"requests": 0, "errors": 0}
    started = int(time.time())

    @app.middleware("http")
    async def auth_and_count(request: Request, call_next):
        app.state.counters["requests"] += 1
        protected = request.url.path.startswith("/v1/") or request.url.path == "/metrics"
        if api_key and protected and not _key_ok(request, api_key):
            app.state.counters["errors"] += 1
            return JSONResponse(error_body("invalid or missing API key: send 'Authorization: Bearer <key>'",
                                           "invalid_request_error", code="invalid_api_key"), status_code=401)
        return await call_next(request)

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        app.state.counters["errors"] += 1
        return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        app.state.counters["errors"] += 1
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        return JSONResponse(error_body(f"invalid request: {loc or 'body'}: {err.get('msg')}",
                                       "invalid_request_error", param=loc or None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), type_), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _crash(request, exc: Exception):
        app.state.counters["errors"] += 1
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}: {exc}", "server_error"),
                            status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.name, "kind": engine.kind}

    @app.get("/metrics")
    async def metrics():
        return {**app.state.counters, "engine": engine.stats()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": started,
                                            "owned_by": "ragtune"}]}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        _check_llm(engine, req)
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        return await _generate(engine, req, lambda: engine.encode_chat(messages), chat=True,
                               default_max_tokens=default_max_tokens)

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        _check_llm(engine, req)
        prompt = req.prompt if isinstance(req.prompt, str) else None
        if prompt is None:
            if len(req.prompt) != 1:
                raise APIError(400, "only one prompt per request is supported; send a list of one "
                                    "or make concurrent requests (they are batched together)", param="prompt")
            prompt = req.prompt[0]
        return await _generate(engine, req, lambda: engine.encode_text(prompt), chat=False,
                               default_max_tokens=default_max_tokens)

    @app.post("/v1/embeddings")
    async def embeddings(req: EmbeddingRequest):
        if engine.kind != "embedding":
            raise APIError(400, f"model '{engine.name}' is an LLM; /v1/embeddings needs an embedding model "
                                "(serve a sentence-transformers model)", param="model")
        _check_model(engine, req.model)
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        if not texts:
            raise APIError(400, "input must not be empty", param="input")
        try:
            vectors, tokens = await asyncio.to_thread(engine.embed, texts)
        except PromptTooLongError as exc:
            raise APIError(400, exc.message, param="input", code="context_length_exceeded") from None
        return {"object": "list", "model": engine.name,
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    return app


def _key_ok(request: Request, api_key: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


def _check_model(engine: Any, model: str | None) -> None:
    if model not in (None, "", engine.name):
        raise APIError(404, f"model '{model}' does not exist; this server serves '{engine.name}'",
                       type_="not_found_error", param="model", code="model_not_found")


def _check_llm(engine: Any, req: _Sampling) -> None:
    if engine.kind != "llm":
        raise APIError(400, f"model '{engine.name}' is an embedding model; use /v1/embeddings", param="model")
    _check_model(engine, req.model)
    for key in _UNSUPPORTED:
        if (req.model_extra or {}).get(key) not in (None, False):
            raise APIError(400, f"'{key}' is not supported by the ragtune builtin server", param=key)
    if req.n != 1:
        raise APIError(400, "only n=1 is supported", param="n")


def _params(req: _Sampling, default_max_tokens: int) -> SamplingParams:
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > 4 or any(not s for s in stop):
        raise APIError(400, "stop must be up to 4 non-empty strings", param="stop")
    return SamplingParams(max_tokens=req.max_completion_tokens or req.max_tokens or default_max_tokens,
                          temperature=req.temperature or 0.0, top_p=req.top_p or 1.0,
                          stop=tuple(stop), seed=req.seed)


async def _generate(engine, req: _Sampling, encode, *, chat: bool, default_max_tokens: int):
    params = _params(req, default_max_tokens)
    try:  # structured output: parsed and compiled before any decoding (engine/constrained.py)
        fmt = request_format(engine, (req.model_extra or {}).get("response_format"))
    except RagtuneError as exc:
        raise APIError(400, str(exc), param="response_format") from None
    if fmt is not None:
        await asyncio.to_thread(engine.grammar_context)  # the one-off vocabulary index, off the event loop
        params = dataclasses.replace(params, response_format=fmt)
    ids = await asyncio.to_thread(encode)
    loop = asyncio.get_running_loop()
    deltas: asyncio.Queue[str] | None = asyncio.Queue() if req.stream else None
    on_delta = (lambda d: loop.call_soon_threadsafe(deltas.put_nowait, d)) if deltas is not None else None
    try:
        future = engine.submit(ids, params, on_delta=on_delta)
    except PromptTooLongError as exc:
        raise APIError(400, exc.message, param="messages" if chat else "prompt",
                       code="context_length_exceeded") from None
    except RagtuneError as exc:
        raise APIError(400, exc.message) from None
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
    created = int(time.time())
    if deltas is None:
        result = await asyncio.wrap_future(future)
        usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                 "total_tokens": result.prompt_tokens + result.completion_tokens}
        choice = ({"index": 0, "message": {"role": "assistant", "content": result.text},
                   "finish_reason": result.finish_reason} if chat else
                  {"index": 0, "text": result.text, "finish_reason": result.finish_reason, "logprobs": None})
        return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
                "model": engine.name, "choices": [choice], "usage": usage}
    return StreamingResponse(_sse(engine, future, deltas, rid, created, chat), media_type="text/event-stream")


async def _sse(engine, future, deltas: asyncio.Queue, rid: str, created: int, chat: bool):
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(delta: str | None, finish: str | None = None, first: bool = False) -> str:
        if chat:
            body: dict[str, Any] = {"role": "assistant", "content": ""} if first else (
                {"content": delta} if delta is not None else {})
            choice = {"index": 0, "delta": body, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
        data = {"id": rid, "object": obj, "created": created, "model": engine.name, "choices": [choice]}
        return "data: " + json.dumps(data, ensure_ascii=False) + "\n\n"

    if chat:
        yield chunk(None, first=True)
    wrapped = asyncio.wrap_future(future)
    while True:
        getter = asyncio.ensure_future(deltas.get())
        done, _ = await asyncio.wait({getter, wrapped}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            yield chunk(getter.result())
            continue
        getter.cancel()
        break
    while not deltas.empty():  # deltas queued just before the result arrived
        yield chunk(deltas.get_nowait())
    try:
        result = wrapped.result()
    except Exception as exc:  # headers are already sent: report the error in-stream, OpenAI style
        yield "data: " + json.dumps(error_body(f"generation failed: {exc}", "server_error")) + "\n\n"
        return
    yield chunk(None, finish=result.finish_reason)
    yield "data: [DONE]\n\n"
