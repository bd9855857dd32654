"""The builtin engine: transformers on CPU or CUDA, with dynamic batching.

Concurrent requests go into a queue; a worker thread takes the first one, waits ``batch_wait_ms``
for more (up to ``max_batch_size``), left-pads them and runs ONE ``model.generate``. Requests with
different sampling settings (temperature, top_p, seed) go into separate batches, because
``generate`` applies one sampling config to the whole batch. Per-request ``max_tokens``, stop
strings, EOS and streaming are handled per row by a stopping criterion (:class:`_RowTracker`),
which ``generate`` calls after every decoding step with the whole batch: it finishes rows
independently (transformers keeps finished rows padded) and pushes newly decoded text to
streaming callbacks.

Prompts are built with :func:`ragtune.core.prompt.build_prompt` / :func:`encode_prompt`, the same
functions training uses, so a served fine-tuned model sees exactly its training format.
"""
from __future__ import annotations

import collections
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..core.errors import ConfigError, RagtuneError
from ..core.log import get_logger
from ..core.prompt import PromptConfig, build_prompt, encode_prompt

log = get_logger(__name__)
Messages = Sequence[dict[str, str]]


class PromptTooLongError(RagtuneError, ValueError):
    """The prompt plus the requested new tokens do not fit in the model's context."""


@dataclass(frozen=True)
class SamplingParams:
    """Generation settings of one request. ``temperature == 0`` means greedy (the default: eval
    results must be reproducible)."""

    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def batch_key(self) -> tuple:
        """Requests with the same key can share one ``generate`` call."""
        return (0.0, 1.0, None) if self.greedy else (self.temperature, self.top_p, self.seed)


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) | "length"
    token_ids: list[int] = field(default_factory=list, repr=False)  # generated ids (EOS excluded)


@dataclass
class _Request:
    ids: list[int]
    params: SamplingParams
    future: Future = field(default_factory=Future)
    on_delta: Callable[[str], None] | None = None


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of ``text`` that could be the start of a stop string: a stream
    must not emit it yet, or the client would see half a stop string that is later cut."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                best = max(best, k)
                break
    return best


class _RowTracker:
    """Stopping criterion for a left-padded batch: per row EOS, stop strings, max_tokens, streaming."""

    def __init__(self, tokenizer, requests: Sequence[_Request], prompt_len: int, eos_ids: set[int]):
        self.tok, self.reqs, self.prompt_len, self.eos_ids = tokenizer, requests, prompt_len, eos_ids
        self.results: list[Completion | None] = [None] * len(requests)
        self.sent = [0] * len(requests)

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        new = input_ids[:, self.prompt_len:].tolist()
        for i, req in enumerate(self.reqs):
            if self.results[i] is None:
                self._update(i, req, new[i])
            done[i] = self.results[i] is not None
        return done

    def _update(self, i: int, req: _Request, toks: list[int]) -> None:
        reason = None
        if toks and toks[-1] in self.eos_ids:
            toks, reason = toks[:-1], "stop"
        text = self.tok.decode(toks, skip_special_tokens=True)
        cut = min((p for p in (text.find(s) for s in req.params.stop) if p >= 0), default=-1)
        if cut >= 0:
            text, reason = text[:cut], "stop"
        elif reason is None and len(toks) >= req.params.max_tokens:
            reason = "length"
        if reason is not None:
            self.results[i] = Completion(text, len(req.ids), len(toks), reason, toks)
            self._emit(i, req, text)
            return
        # Hold back an incomplete UTF-8 character and a possible stop-string prefix.
        stable = text.rstrip("\ufffd")
        stable = stable[: len(stable) - _held_back(stable, req.params.stop)]
        self._emit(i, req, stable)

    def _emit(self, i: int, req: _Request, text: str) -> None:
        if req.on_delta is not None and len(text) > self.sent[i]:
            delta, self.sent[i] = text[self.sent[i]:], len(text)
            try:
                req.on_delta(delta)
            except Exception:  # a dead stream consumer must not kill the whole batch
                log.debug("stream callback failed", exc_info=True)


class BuiltinEngine:
    """A loaded causal LM plus a dynamic-batching worker.

    >>> engine = BuiltinEngine.load("gemma-3-270m")
    >>> engine.generate(["What is 2+2?"], SamplingParams(max_tokens=8))[0].text
    """

    kind = "llm"

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "model", prompt: PromptConfig | None = None,
                 max_batch_size: int = 16, batch_wait_ms: float = 10.0, max_model_len: int | None = None):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.prompt_cfg = prompt or PromptConfig()
        self.max_batch_size, self.batch_wait_s = max_batch_size, batch_wait_ms / 1000.0
        self.max_model_len = max_model_len or _context_limit(model)
        self.device = next(model.parameters()).device
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.batch_sizes: collections.Counter[int] = collections.Counter()  # batch size -> count
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._model_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._closed = False

    # -- loading ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, model: str, adapter: str | None = None, *, dtype: str = "auto", device: str | None = None,
             prompt: PromptConfig | dict | str | None = None, name: str | None = None,
             **kwargs: Any) -> "BuiltinEngine":
        """Load base (+ LoRA adapter) or a merged dir / fine-tune output dir (see ``source.py``)."""
        from ..models.source import merge_prompt, resolve_source

        source = resolve_source(model, adapter, name)
        cfg = PromptConfig.coerce(prompt) if prompt is not None else merge_prompt(source.prompt)
        hf_model, tokenizer = load_causal_lm(source.model, source.adapter, dtype=dtype, device=device)
        return cls(hf_model, tokenizer, name=source.name, prompt=cfg, **kwargs)

    # -- prompts ----------------------------------------------------------------------------------
    def encode_chat(self, messages: Messages | str) -> list[int]:
        return encode_prompt(self.tokenizer, build_prompt(self.tokenizer, messages, self.prompt_cfg))

    def encode_text(self, text: str) -> list[int]:
        """A raw completion prompt: no template, BOS added as in training."""
        return encode_prompt(self.tokenizer, text)

    def check_fits(self, ids: Sequence[int], max_tokens: int) -> None:
        if len(ids) + max_tokens > self.max_model_len:
            raise PromptTooLongError(
                f"the prompt has {len(ids)} tokens and {max_tokens} new tokens were requested, but this "
                f"model's context limit is {self.max_model_len} tokens (prompt + max_tokens)",
                hint="shorten the prompt or lower max_tokens")

    # -- the batching worker ------------------------------------------------------------------------
    def submit(self, ids: list[int], params: SamplingParams,
               on_delta: Callable[[str], None] | None = None) -> Future:
        """Queue one request; the future resolves to a :class:`Completion`."""
        if self._closed:
            raise RagtuneError("the engine is closed")
        self.check_fits(ids, params.max_tokens)
        self._ensure_worker()
        req = _Request(list(ids), params, on_delta=on_delta)
        self._queue.put(req)
        return req.future

    def _ensure_worker(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._loop, name="ragtune-batcher", daemon=True)
            self._worker.start()

    def _collect(self, first: _Request) -> list[_Request]:
        batch, deadline = [first], time.monotonic() + self.batch_wait_s
        while len(batch) < self.max_batch_size:
            timeout = deadline - time.monotonic()
            try:
                req = self._queue.get(timeout=max(timeout, 0)) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if req is None:
                self._queue.put(None)
                break
            batch.append(req)
        return batch

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            groups: dict[tuple, list[_Request]] = {}
            for req in self._collect(first):
                groups.setdefault(req.params.batch_key(), []).append(req)
            for reqs in groups.values():
                self._run_and_resolve(reqs)

    def _run_and_resolve(self, reqs: list[_Request]) -> None:
        try:
            results = self.run_batch(reqs)
        except BaseException as exc:  # every waiting client gets the error, the worker lives on
            log.exception("batch of %d failed", len(reqs))
            for req in reqs:
                if not req.future.done():
                    req.future.set_exception(exc)
            return
        for req, result in zip(reqs, results):
            req.future.set_result(result)

    def close(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout=30)

    # -- one batched generate -----------------------------------------------------------------------
    def run_batch(self, reqs: Sequence[_Request]) -> list[Completion]:
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        params = reqs[0].params
        width = max(len(r.ids) for r in reqs)
        input_ids = torch.full((len(reqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(reqs), width), dtype=torch.long)
        for i, r in enumerate(reqs):  # left padding: every row's next token is at column ``width``
            input_ids[i, width - len(r.ids):] = torch.tensor(r.ids)
            mask[i, width - len(r.ids):] = 1
        tracker = _RowTracker(self.tokenizer, reqs, width, self.eos_ids)
        gen = GenerationConfig(max_new_tokens=max(r.params.max_tokens for r in reqs),
                               do_sample=not params.greedy, pad_token_id=self.pad_id,
                               eos_token_id=sorted(self.eos_ids), bos_token_id=self.tokenizer.bos_token_id)
        if not params.greedy:
            gen.temperature, gen.top_p, gen.top_k = params.temperature, params.top_p, 0
        with self._model_lock, torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            self.batch_sizes[len(reqs)] += 1
            self.model.generate(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                generation_config=gen, stopping_criteria=StoppingCriteriaList([tracker]))
        return [r if r is not None else Completion("", len(q.ids), 0, "length")
                for r, q in zip(tracker.results, reqs)]

    # -- synchronous helpers (infer, LocalLLM) ---------------------------------------------------------
    def generate_ids(self, prompts: Sequence[list[int]], params: SamplingParams,
                     progress: Callable[[list[int], list[Completion]], None] | None = None) -> list[Completion]:
        """Run many prompts directly (no queue), in length-sorted batches of ``max_batch_size`` so
        rows of a batch need little padding. ``progress(indices, completions)`` after each batch."""
        for ids in prompts:
            self.check_fits(ids, params.max_tokens)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[Completion | None] = [None] * len(prompts)
        for start in range(0, len(order), self.max_batch_size):
            chunk = order[start:start + self.max_batch_size]
            done = self.run_batch([_Request(list(prompts[i]), params) for i in chunk])
            for i, c in zip(chunk, done):
                out[i] = c
            if progress is not None:
                progress(chunk, done)
        return out  # type: ignore[return-value]

    def generate(self, prompts: Sequence[Messages | str], params: SamplingParams | None = None,
                 raw: bool = False) -> list[Completion]:
        """Chat prompts (str = one user turn, or message lists) through the shared prompt builder;
        ``raw=True`` sends the strings as they are (completion style)."""
        params = params or SamplingParams()
        ids = [self.encode_text(p) if raw else self.encode_chat(p) for p in prompts]  # type: ignore[arg-type]
        return self.generate_ids(ids, params)

    def stats(self) -> dict[str, Any]:
        sizes = dict(sorted(self.batch_sizes.items()))
        return {"batches": sum(sizes.values()), "requests": sum(k * v for k, v in sizes.items()),
                "max_batch_size_seen": max(sizes, default=0), "batch_size_histogram": sizes,
                "max_batch_size": self.max_batch_size, "queue_depth": self._queue.qsize()}


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None)
        if value is not None:
            ids.update(value if isinstance(value, (list, tuple)) else [value])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    for token in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>"):  # chat models' end-of-turn tokens
        tid = tokenizer.convert_tokens_to_ids(token) if token in tokenizer.get_vocab() else None
        if tid is not None:
            ids.add(tid)
    return ids


def _contiguous_head_input(model: Any) -> None:
    """Generation slices the last position, ``hidden[:, -1:]``: a 3-D view whose batch stride is the
    whole prompt. With frozen weights (``requires_grad=False``, as after loading an adapter) PyTorch's
    linear does not fold that view into one GEMM but expands the 262k x 640 output weight per batch
    row and copies it (5.4 GB for a batch of 8: measured 40% of a 16-prompt batch's time). A
    contiguous input folds; the copy is batch x hidden."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        head.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(), *args[1:]))


def _context_limit(model: Any) -> int:
    cfg = getattr(model.config, "get_text_config", lambda: model.config)()
    return int(getattr(cfg, "max_position_embeddings", None) or 4096)


def load_causal_lm(model_ref: str, adapter: Any = None, *, dtype: str = "auto", device: str | None = None):
    """(model, tokenizer) in eval mode; LoRA adapter applied with peft (not merged: merging bf16
    weights changes numerics slightly, and the unmerged model is what training evaluated)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..models.device import default_device, resolve_dtype
    from ..models import resolve_model

    resolved = resolve_model(model_ref, kind="llm")
    if resolved.kind != "llm":
        raise ConfigError(f"{model_ref} is an embedding model; the builtin LLM engine cannot generate with it")
    device = device or default_device()
    torch_dtype = resolve_dtype(dtype, device)
    kw = {"gguf_file": resolved.gguf_file} if resolved.gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(resolved.path, **kw)
    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch_dtype, **kw)
    if adapter is not None:
        from peft import PeftModel

        from ..models.fast_lora import install

        model = PeftModel.from_pretrained(model, str(adapter))
        install(model)  # adapter branch in the base dtype, fused into its GEMM (as in training)
        model = model.get_base_model()  # LoRA layers are injected in place; generate as plain HF
    _contiguous_head_input(model)
    model.to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
