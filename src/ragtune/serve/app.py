"""The OpenAI-compatible HTTP API (FastAPI) in front of an engine.

Endpoints: ``/v1/chat/completions`` (SSE streaming or not), ``/v1/completions``, ``/v1/embeddings``
(embedding models), ``/v1/models``, ``/health``, and ``/metrics`` (JSON: batch-size histogram of the
dynamic batcher, request counters). Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}`` with matching status codes; a client's mistake is
always a 4xx (types are strict: ``"stream": "yes"`` is a 400, not True), a field the server cannot
honour is a 400 naming it, and the Host check, API key and body limit live in :mod:`.guards`.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core.errors import RagtuneError
from ..engine.base import MAX_LOGIT_BIAS
from ..engine.builtin import PromptTooLongError, SamplingParams
from ..engine.constrained import request_format
from .guards import LOOPBACK_HOSTS, RequestGuard, error_body

# Fields OpenAI clients may send that this server cannot honour: rejected, never silently ignored,
# unless they hold their neutral value (LangChain & co send presence_penalty=0 on every request).
_UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call",
                "best_of", "suffix", "echo", "presence_penalty",
                "frequency_penalty", "parallel_tool_calls", "modalities", "audio",
                "prediction", "reasoning_effort", "web_search_options", "service_tier")
# Accepted and without effect on the answer (OpenAI's abuse-monitoring and storage tags).
_IGNORED = ("user", "metadata", "store")


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code


def _valid_unicode(text: str) -> str:
    # JSON may carry a lone UTF-16 surrogate ("\ud800"): Python accepts it, the tokenizer and the
    # UTF-8 response encoder do not (a 500 before this check).
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"is not valid Unicode: unpaired surrogate {text[exc.start]!r} at character "
                         f"{exc.start}") from None
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]
# torch.manual_seed's range; outside it the batch failed with a 500.
Seed = Annotated[int, Field(ge=-(2 ** 63), le=2 ** 64 - 1)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool = False   # a last chunk with empty choices and the usage, as OpenAI sends


class _Sampling(BaseModel):
    # strict: no coercion ("max_tokens": true and "stream": "yes" are 400s, not 1 and True)
    model_config = ConfigDict(extra="allow", strict=True)

    model: Text | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: Text | list[Text] | None = None
    seed: Seed | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    response_format: Any = None   # validated by engine/constrained.py (its errors name the field)
    logit_bias: dict[str, float] | None = None   # OpenAI's: {"token id": bias in [-100, 100]}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "user", "assistant"]
    content: Text | list[dict[str, Any]]

    def text(self, index: int = 0) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = []
        for j, part in enumerate(self.content):
            param = f"messages.{index}.content.{j}"
            if part.get("type") != "text":
                raise APIError(400, f"unsupported content part type {part.get('type')!r}; only 'text'",
                               param=f"{param}.type")
            if not isinstance(part.get("text"), str):
                raise APIError(400, "a text part needs a string 'text'", param=f"{param}.text")
            parts.append(_api_unicode(part["text"], f"{param}.text"))
        return "".join(parts)


class _Logprobs(BaseModel):
    # vLLM's extension: report tokens as "token_id:N" (what a distilling student aligns on)
    return_tokens_as_token_ids: bool = False


class ChatRequest(_Sampling, _Logprobs):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class CompletionRequest(_Sampling, _Logprobs):
    prompt: Text | list[Text]
    logprobs: int | None = Field(None, ge=0, le=20)   # legacy completions: the number of top tokens


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    model: Text | None = None
    input: Text | list[Text]
    # base64: little-endian float32 bytes (what the openai client asks for by default)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)   # the first N dimensions, L2-renormalised
    # ragtune's extension (as Cohere / Voyage / vLLM name it): "query" applies the model's saved
    # query instruction; documents ("document" / "passage") are embedded as they are.
    input_type: Literal["query", "document", "passage"] = "document"


def create_app(engine: Any, *, api_key: str | None = None, default_max_tokens: int = 256,
               max_request_bytes: int = 4 * 2 ** 20, max_embedding_inputs: int = 2048,
               allowed_hosts: list[str] | tuple[str, ...] = LOOPBACK_HOSTS) -> FastAPI:
    """``engine`` is a :class:`BuiltinEngine` (kind "llm") or :class:`EmbeddingEngine` ("embedding").
    The limits are :class:`~ragtune.serve.server.ServeConfig`'s (see there); ``allowed_hosts``
    are the Host header names served (``"*"``: any), loopback names by default."""
    app = FastAPI(title="ragtune", version="1")
    app.state.engine = engine
    app.state.counters = {"requests": 0, "errors": 0}
    started = int(time.time())
    app.add_middleware(RequestGuard, api_key=api_key, allowed_hosts=allowed_hosts,
                       max_request_bytes=max_request_bytes, counters=app.state.counters)

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        app.state.counters["errors"] += 1
        return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        app.state.counters["errors"] += 1
        err, loc = _most_specific(exc.errors())
        return JSONResponse(error_body(f"invalid request: {loc or 'body'}: {err.get('msg')}",
                                       "invalid_request_error", param=loc or None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        app.state.counters["errors"] += 1
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        code = "request_too_large" if exc.status_code == 413 else None
        return JSONResponse(error_body(str(exc.detail), type_, code=code), status_code=exc.status_code)

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
    async def chat(req: ChatRequest, request: Request):
        _check_llm(engine, req)
        messages = [{"role": m.role, "content": m.text(i)} for i, m in enumerate(req.messages)]
        return await _generate(engine, req, lambda: engine.encode_chat(messages), chat=True,
                               default_max_tokens=default_max_tokens, request=request)

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        _check_llm(engine, req)
        prompt = req.prompt if isinstance(req.prompt, str) else None
        if prompt is None:
            if len(req.prompt) != 1:
                raise APIError(400, "only one prompt per request is supported; send a list of one "
                                    "or make concurrent requests (they are batched together)", param="prompt")
            prompt = req.prompt[0]
        return await _generate(engine, req, lambda: engine.encode_text(prompt), chat=False,
                               default_max_tokens=default_max_tokens, request=request)

    @app.post("/v1/embeddings")
    async def embeddings(req: EmbeddingRequest):
        if engine.kind != "embedding":
            raise APIError(400, f"model '{engine.name}' is an LLM; /v1/embeddings needs an embedding model "
                                "(serve a sentence-transformers model)", param="model")
        _check_model(engine, req.model)
        _check_extra_fields(req, ())
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        _check_embedding_input(texts, isinstance(req.input, str), max_embedding_inputs)
        if req.dimensions is not None and req.dimensions > engine.dimension:
            raise APIError(400, f"dimensions={req.dimensions} is more than this model's {engine.dimension} "
                                "dimensions", param="dimensions")
        try:
            vectors, tokens = await asyncio.to_thread(engine.embed, texts, req.input_type == "query")
        except PromptTooLongError as exc:
            raise APIError(400, exc.message, param="input", code="context_length_exceeded") from None
        out = [_encode_embedding(v, req.dimensions, req.encoding_format) for v in vectors]
        return {"object": "list", "model": engine.name,
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(out)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    return app


# pydantic names the member of a Union that failed ("function-after[...]", "list[...]", "str"):
# not a request field, so not part of ``param``. A dict key ("logit_bias": {"5": ...}) is kept.
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "json-or-python", "lax-or-strict"}


def _most_specific(errors: Sequence[dict]) -> tuple[dict, str]:
    """The error with the deepest request-field path (for a Union, the branch the value was meant
    for: ``"stop": [1]`` -> ``stop.0``), and that path."""
    def path(err: dict) -> list[str]:
        return [str(p) for p in err.get("loc", ()) if p != "body" and not (
            isinstance(p, str) and ("[" in p or p in _TYPE_TAGS))]

    best = max(errors, key=lambda e: len(path(e)))
    return best, ".".join(path(best))


def _api_unicode(text: str, param: str) -> str:
    try:
        return _valid_unicode(text)
    except ValueError as exc:
        raise APIError(400, f"{param} {exc}", param=param) from None


def _encode_embedding(vector: list[float], dimensions: int | None, encoding_format: str) -> list[float] | str:
    """One vector as the response carries it: its first ``dimensions`` values scaled back to unit
    length (as OpenAI's text-embedding-3 models shorten), as floats or as base64 of little-endian
    float32 bytes (OpenAI's ``encoding_format: "base64"``)."""
    vec = np.asarray(vector, dtype=np.float64)
    if dimensions is not None and dimensions < len(vec):
        vec = vec[:dimensions]
        norm = float(np.linalg.norm(vec))
        vec = vec / norm if norm > 0 else vec
    if encoding_format == "base64":
        return base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
    return vec.tolist()


def _check_embedding_input(texts: list[str], single: bool, limit: int) -> None:
    if not texts:
        raise APIError(400, "input must not be empty", param="input")
    if len(texts) > limit:
        raise APIError(400, f"input holds {len(texts)} texts; this server embeds at most {limit} per request "
                            "(max_embedding_inputs): split it into several requests", param="input")
    for i, text in enumerate(texts):
        if not text.strip():
            param = "input" if single else f"input.{i}"
            raise APIError(400, f"{param} is an empty string: there is nothing to embed", param=param)


def _is_neutral(value: Any) -> bool:
    """The value that asks for nothing: null, false, 0, "", {} or []."""
    if isinstance(value, bool) or value is None:
        return value is not True
    if isinstance(value, (int, float)):
        return value == 0
    return value in ("", {}, [])


def _check_extra_fields(req: BaseModel, unsupported: tuple[str, ...]) -> None:
    """Fields the request model does not declare: known-unsupported ones are a 400 unless neutral,
    OpenAI's bookkeeping tags are accepted, anything else is unknown (OpenAI answers that with a
    400 too: "Unrecognized request argument supplied")."""
    for key, value in (req.model_extra or {}).items():
        if key in _IGNORED:
            continue
        if key in unsupported:
            if _is_neutral(value):
                continue
            raise APIError(400, f"'{key}' is not supported by the ragtune builtin server", param=key)
        raise APIError(400, f"unrecognized request field '{key}'", param=key)


def _check_model(engine: Any, model: str | None) -> None:
    if model not in (None, "", engine.name):
        raise APIError(404, f"model '{model}' does not exist; this server serves '{engine.name}'",
                       type_="not_found_error", param="model", code="model_not_found")


def _check_llm(engine: Any, req: _Sampling) -> None:
    if engine.kind != "llm":
        raise APIError(400, f"model '{engine.name}' is an embedding model; use /v1/embeddings", param="model")
    _check_model(engine, req.model)
    _check_extra_fields(req, _UNSUPPORTED)
    if req.n != 1:
        raise APIError(400, "only n=1 is supported", param="n")
    if req.stream_options is not None and req.stream_options.include_usage and not req.stream:
        raise APIError(400, "stream_options.include_usage needs stream=true (a non-streaming answer "
                            "always carries usage)", param="stream_options")
    if _requested_logprobs(req) is not None and not getattr(engine, "supports_logprobs", False):
        raise APIError(400, f"this server's engine ({type(engine).__name__}) does not return logprobs",
                       param="logprobs")


def _params(req: _Sampling, default_max_tokens: int) -> SamplingParams:
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > 4 or any(not s for s in stop):
        raise APIError(400, "stop must be up to 4 non-empty strings", param="stop")
    return SamplingParams(max_tokens=req.max_completion_tokens or req.max_tokens or default_max_tokens,
                          temperature=req.temperature or 0.0, top_p=req.top_p or 1.0,
                          stop=tuple(stop), seed=req.seed, logprobs=_requested_logprobs(req),
                          logit_bias=_logit_bias(req.logit_bias))


def _logit_bias(bias: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    """OpenAI's ``logit_bias`` map (token ids as strings) as SamplingParams pairs, sorted by id."""
    pairs = []
    for key, value in (bias or {}).items():
        if not key.isascii() or not key.isdigit():
            raise APIError(400, f"logit_bias keys must be token ids (decimal strings), got {key!r}",
                           param=f"logit_bias.{key}")
        if not -MAX_LOGIT_BIAS <= value <= MAX_LOGIT_BIAS:
            raise APIError(400, f"logit_bias values must be in [-{MAX_LOGIT_BIAS:g}, {MAX_LOGIT_BIAS:g}], got {value}",
                           param=f"logit_bias.{key}")
        pairs.append((int(key), float(value)))
    return tuple(sorted(pairs))


def _requested_logprobs(req: _Sampling) -> int | None:
    """How many top tokens per position the request asks for (None: no logprobs), OpenAI's rules:
    chat sends ``logprobs: true`` plus ``top_logprobs``; legacy completions send ``logprobs: k``."""
    if isinstance(req, ChatRequest):
        if req.top_logprobs is not None and not req.logprobs:
            raise APIError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
        k = (req.top_logprobs or 0) if req.logprobs else None
    else:
        k = getattr(req, "logprobs", None)
    if k is not None and req.stream:
        raise APIError(400, "logprobs with stream=true is not supported by the ragtune server; "
                            "send stream=false", param="logprobs")
    return k


def _token_text(token_id: int, text: str, as_ids: bool) -> str:
    return f"token_id:{token_id}" if as_ids else text


def _chat_logprobs(result, as_ids: bool) -> dict | None:
    """``choice.logprobs`` of a chat completion: ``{"content": [{token, logprob, bytes, top_logprobs}]}``."""
    if result.logprobs is None:
        return None
    return {"content": [
        {"token": _token_text(t.token_id, t.token, as_ids), "logprob": t.logprob, "bytes": list(t.token.encode()),
         "top_logprobs": [{"token": _token_text(a.token_id, a.token, as_ids), "logprob": a.logprob,
                           "bytes": list(a.token.encode())} for a in t.top]}
        for t in result.logprobs]}


def _completion_logprobs(result, as_ids: bool) -> dict | None:
    """Legacy ``choice.logprobs``: parallel lists tokens / token_logprobs / top_logprobs / text_offset."""
    if result.logprobs is None:
        return None
    offsets, pos = [], 0
    for t in result.logprobs:
        offsets.append(pos)
        pos += len(t.token)
    return {"tokens": [_token_text(t.token_id, t.token, as_ids) for t in result.logprobs],
            "token_logprobs": [t.logprob for t in result.logprobs],
            "top_logprobs": [{_token_text(a.token_id, a.token, as_ids): a.logprob for a in t.top}
                             for t in result.logprobs],
            "text_offset": offsets}


async def _generate(engine, req: _Sampling, encode, *, chat: bool, default_max_tokens: int,
                    request: Request | None = None):
    params = _params(req, default_max_tokens)
    if chat:   # a plain/named template's own markers end the answer too (merged with the request's stop)
        params = engine.chat_params(params)
    try:  # structured output: parsed and compiled before any decoding (engine/constrained.py)
        fmt = request_format(engine, req.response_format)
    except RagtuneError as exc:
        raise APIError(400, str(exc), param="response_format") from None
    if fmt is not None:
        await asyncio.to_thread(engine.grammar_context)  # the one-off vocabulary index, off the event loop
        params = dataclasses.replace(params, response_format=fmt)
    try:
        engine.check_logit_bias(params)
    except RagtuneError as exc:
        raise APIError(400, exc.message, param="logit_bias") from None
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
        result = await _result_unless_gone(future, request)
        if result is None:   # the client left: its row was dropped from the batch
            return JSONResponse(error_body("client disconnected", "invalid_request_error"), status_code=499)
        usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                 "total_tokens": result.prompt_tokens + result.completion_tokens}
        as_ids = bool(getattr(req, "return_tokens_as_token_ids", False))
        choice = ({"index": 0, "message": {"role": "assistant", "content": result.text},
                   "finish_reason": result.finish_reason, "logprobs": _chat_logprobs(result, as_ids)} if chat else
                  {"index": 0, "text": result.text, "finish_reason": result.finish_reason,
                   "logprobs": _completion_logprobs(result, as_ids)})
        return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
                "model": engine.name, "choices": [choice], "usage": usage}
    with_usage = bool(req.stream_options and req.stream_options.include_usage)
    return StreamingResponse(_sse(engine, future, deltas, rid, created, chat, request, include_usage=with_usage),
                             media_type="text/event-stream")


async def _disconnected(request: Request | None) -> None:
    """Returns when the client has gone (the body is already read, so the next ASGI message is
    ``http.disconnect``); never returns without a request."""
    if request is None:
        await asyncio.Event().wait()
        return
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _result_unless_gone(future, request: Request | None):
    """The completion, or None when the client disconnected first (then the request is cancelled:
    the engine drops its row at the next decoding step instead of generating for nobody)."""
    wrapped = asyncio.wrap_future(future)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({wrapped, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not future.done():
            future.cancel()
    return wrapped.result() if wrapped.done() and not wrapped.cancelled() else None


async def _sse(engine, future, deltas: asyncio.Queue, rid: str, created: int, chat: bool,
               request: Request | None = None, include_usage: bool = False):
    """The SSE stream; ``include_usage`` (``stream_options``): every chunk carries ``usage: null``
    and a last chunk before ``[DONE]`` has empty ``choices`` and the usage, as OpenAI streams."""
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(delta: str | None, finish: str | None = None, first: bool = False) -> str:
        if chat:
            body: dict[str, Any] = {"role": "assistant", "content": ""} if first else (
                {"content": delta} if delta is not None else {})
            choice = {"index": 0, "delta": body, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
        data = {"id": rid, "object": obj, "created": created, "model": engine.name, "choices": [choice]}
        if include_usage:
            data["usage"] = None
        return "data: " + json.dumps(data, ensure_ascii=False) + "\n\n"

    wrapped = asyncio.wrap_future(future)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        if chat:
            yield chunk(None, first=True)
        while True:
            getter = asyncio.ensure_future(deltas.get())
            done, _ = await asyncio.wait({getter, wrapped, gone}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield chunk(getter.result())
                continue
            getter.cancel()
            if gone in done:
                return
            break
        while not deltas.empty():  # deltas queued just before the result arrived
            yield chunk(deltas.get_nowait())
        try:
            result = wrapped.result()
        except Exception as exc:  # headers are already sent: report the error in-stream, OpenAI style
            yield "data: " + json.dumps(error_body(f"generation failed: {exc}", "server_error")) + "\n\n"
            return
        yield chunk(None, finish=result.finish_reason)
        if include_usage:
            usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                     "total_tokens": result.prompt_tokens + result.completion_tokens}
            data = {"id": rid, "object": obj, "created": created, "model": engine.name, "choices": [],
                    "usage": usage}
            yield "data: " + json.dumps(data, ensure_ascii=False) + "\n\n"
        yield "data: [DONE]\n\n"
    finally:
        # A client that disconnects mid-stream (Starlette cancels this generator) or that we saw
        # go: cancel its request so the batch stops decoding a row nobody reads.
        gone.cancel()
        if not future.done():
            future.cancel()
