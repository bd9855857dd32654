"""The builtin engine: transformers on CPU or CUDA, with dynamic batching.

Concurrent requests go into a queue; a worker thread takes the first one, waits ``batch_wait_ms``
for more (up to ``max_batch_size``), left-pads them and decodes them together in ragtune's own loop
(:meth:`BuiltinEngine._decode`: ``generate``'s greedy/sampling step, but a finished row leaves the
batch). Requests with different sampling settings (temperature, top_p, seed) go into separate
batches, because one sampling config applies to the whole batch. Per-request ``max_tokens``, stop
strings, EOS and streaming are handled per row by :class:`_RowTracker`, called after every decoding
step with the whole batch: it finishes rows independently and pushes newly decoded text to
streaming callbacks. A request whose future was cancelled (its HTTP client disconnected) is
finished at the next step with ``finish_reason="cancelled"``, so it stops costing decode time.

Prompts are built with :func:`ragtune.core.prompt.build_prompt` / :func:`encode_prompt`, the same
functions training uses, so a served fine-tuned model sees exactly its training format.
"""
from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import Field

from ..core.errors import RagtuneError
from ..core.log import get_logger
from ..core.prompt import PromptConfig, build_prompt, common_prefix, encode_prompt, resolve_prompt
from .base import ENGINES, Completion, Engine, EngineSettings, Messages, PromptTooLongError, SamplingParams

log = get_logger(__name__)
__all__ = ["BuiltinEngine", "BuiltinSettings", "Completion", "PromptTooLongError", "SamplingParams"]


class BuiltinSettings(EngineSettings):
    """Settings of the builtin (transformers) engine."""
    dtype: str = Field("auto", description="auto (bf16 where native), bf16, fp16, fp32.")
    device: str | None = Field(None, description="cpu, cuda, cuda:1 ... (default: cuda if available).")
    threads: int | None = Field(None, ge=1, description="CPU threads (process-wide; default: PyTorch's).")
    max_batch_size: int = Field(16, ge=1, description="Most requests decoded together in one batch.")
    batch_wait_ms: float = Field(10.0, ge=0, description="How long the batcher waits to fill a batch.")
    max_model_len: int | None = Field(None, ge=16, description="Context limit (prompt + max_tokens); default: the model's.")
    prefix_cache: bool = Field(True, description="Eval sets: prompts that share a prefix (a passage with several "
                               "questions) reuse its KV cache instead of recomputing it.")
    prefix_min_tokens: int = Field(32, ge=1, description="Shared tokens needed to reuse a prefix's cache.")


@dataclass
class _Request:
    ids: list[int]
    params: SamplingParams
    future: Future = field(default_factory=Future)
    on_delta: Callable[[str], None] | None = None
    constraint: Any = None          # extractive.Constraint: what this request may generate


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
            if self.results[i] is None and req.future.cancelled():
                self.results[i] = Completion("", len(req.ids), len(new[i]), "cancelled", new[i])
            elif self.results[i] is None:
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


class _LogitBias:
    """OpenAI's ``logit_bias``: a fixed amount added to some tokens' logits at every step."""

    def __init__(self, bias: Sequence[tuple[int, float]]):
        self.ids = [t for t, _ in bias]
        self.values = [b for _, b in bias]

    def __call__(self, input_ids, scores):
        import torch

        scores[:, self.ids] += torch.tensor(self.values, dtype=scores.dtype, device=scores.device)
        return scores


@ENGINES.register("builtin")
class BuiltinEngine(Engine):
    """A loaded causal LM (transformers, CPU or CUDA) plus a dynamic-batching worker.

    >>> engine = BuiltinEngine.load("gemma-3-270m")
    >>> engine.generate(["What is 2+2?"], SamplingParams(max_tokens=8))[0].text
    """

    Settings = BuiltinSettings
    description = "transformers in this process; dynamic batching (CPU or CUDA)"
    supports_logprobs = True
    structured_output = True

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "model", prompt: PromptConfig | None = None,
                 max_batch_size: int = 16, batch_wait_ms: float = 10.0, max_model_len: int | None = None,
                 prefix_cache: bool = True, prefix_min_tokens: int = 32):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.prefix_cache, self.prefix_min_tokens = prefix_cache, prefix_min_tokens
        self.prefix_stats = {"groups": 0, "items": 0, "prefix_tokens_saved": 0}
        self.prompt = prompt or PromptConfig()
        self.max_batch_size, self.batch_wait_s = max_batch_size, batch_wait_ms / 1000.0
        self.max_model_len = max_model_len or _context_limit(model)
        self.device = next(model.parameters()).device
        from ..models.loading import contiguous_head_input

        contiguous_head_input(model)
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.batch_sizes: collections.Counter[int] = collections.Counter()  # batch size -> count
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._model_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._closed = False
        self.cancelled = 0          # requests dropped because their client disconnected
        self.cancelled_tokens = 0   # tokens they had generated when dropped

    # -- loading ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, model: str, adapter: str | None = None, *, settings: EngineSettings | None = None,
             prompt: PromptConfig | dict | str | None = None, name: str | None = None,
             **setting_values: Any) -> "BuiltinEngine":
        """Load base (+ LoRA adapter) or a merged dir / fine-tune output dir (see ``models.source``).
        Settings come as ``settings=`` or as keywords (``dtype="fp32", max_batch_size=8``)."""
        from ..models.loading import load_causal_lm
        from ..models.source import resolve_source

        if settings is None:
            settings = BuiltinSettings.build("builtin engine settings", **setting_values)
        elif setting_values:
            settings = settings.model_copy(update=setting_values)
        settings = cast(BuiltinSettings, settings)   # engine_settings() routes each engine its own Settings
        source = resolve_source(model, adapter, name)
        explicit = PromptConfig.coerce(prompt) if prompt is not None else PromptConfig()
        hf_model, tokenizer = load_causal_lm(source.model, source.adapter, dtype=settings.dtype,
                                             device=settings.device, threads=settings.threads)
        return cls(hf_model, tokenizer, name=source.name,
                   prompt=resolve_prompt(explicit, source.trained_prompt(), f"builtin engine, {model}"),
                   max_batch_size=settings.max_batch_size, batch_wait_ms=settings.batch_wait_ms,
                   prefix_cache=settings.prefix_cache, prefix_min_tokens=settings.prefix_min_tokens,
                   max_model_len=settings.max_model_len)

    # -- prompts ----------------------------------------------------------------------------------
    def encode_chat(self, messages: Messages | str, prompt: PromptConfig | None = None) -> list[int]:
        """``prompt``: this request's prompt settings (default: the engine's)."""
        return encode_prompt(self.tokenizer, build_prompt(self.tokenizer, messages, prompt or self.prompt))

    def encode_text(self, text: str) -> list[int]:
        """A raw completion prompt: no template, BOS added as in training."""
        return encode_prompt(self.tokenizer, text)

    # -- the batching worker ------------------------------------------------------------------------
    def submit(self, ids: list[int], params: SamplingParams,
               on_delta: Callable[[str], None] | None = None) -> Future:
        """Queue one request; the future resolves to a :class:`Completion`."""
        if self._closed:
            raise RagtuneError("the engine is closed")
        self.check_fits(ids, params.max_tokens)
        self.check_logit_bias(params)
        self._ensure_worker()
        req = _Request(list(ids), params, on_delta=on_delta)
        self._queue.put(req)
        return req.future

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

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
                if req.future.cancelled():   # its client left while it waited in the queue
                    self.cancelled += 1
                    continue
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
            if result.finish_reason == "cancelled" or req.future.cancelled():
                self.cancelled += 1
                self.cancelled_tokens += result.completion_tokens
            elif not req.future.done():
                req.future.set_result(result)

    def close(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout=30)

    # -- one batched decode ---------------------------------------------------------------------------
    def run_batch(self, reqs: Sequence[_Request], cached: Sequence[tuple[int, Any]] | None = None) -> list[Completion]:
        """One decode over ``reqs``, left-padded: rows are [padding][prompt], as in the plain path.

        ``cached``: per row, (n, the keys/values of its prompt's first n tokens) from :meth:`_prefix_kv`.
        Only the last ``width`` columns are computed, ``width`` being the longest uncached part in the
        batch; each row takes the tokens before those from its cache (a row whose uncached part is
        shorter recomputes a few prefix tokens). The real tokens stay contiguous, so positions and
        sliding-window distances are the plain path's, for prompts of any length, and rows with
        different prefixes (several passages) share one batch."""
        import contextlib

        import torch

        from .constrained import batch_processor

        params = reqs[0].params
        total = max(len(r.ids) for r in reqs)
        reuse = [0] * len(reqs)
        if cached is not None:
            width = max(len(r.ids) - n for r, (n, _) in zip(reqs, cached))
            reuse = [max(0, len(r.ids) - width) for r in reqs]
        input_ids, mask = left_padded([r.ids for r in reqs], self.pad_id)
        tracker = _RowTracker(self.tokenizer, reqs, total, self.eos_ids)
        processors: list[Any] = [_LogitBias(params.logit_bias)] if params.logit_bias else []
        constraints = [r.constraint for r in reqs]
        restricted = None
        if any(c is not None for c in constraints):
            from .extractive import RestrictedHead, SpanProcessor

            if all(c is not None for c in constraints):   # the output layer over the allowed rows only
                restricted = RestrictedHead(self.model, constraints)
            processors.append(SpanProcessor(constraints, total, self.tokenizer, self.eos_ids))
        constrain = batch_processor([r.params.response_format for r in reqs], self.grammar_context, total,
                                    lambda i: tracker.results[i] is not None)
        if constrain is not None:  # response_format rows (engine/constrained.py)
            processors.append(constrain)
        cache, start = None, 0
        if cached is not None and max(reuse):
            start = max(reuse)
            cache = _batch_cache([kv for _, kv in cached], reuse)
            self.prefix_stats["prefix_tokens_saved"] += sum(reuse)
        with self._model_lock, torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            self.batch_sizes[len(reqs)] += 1
            with restricted if restricted is not None else contextlib.nullcontext():
                self._decode(input_ids, mask, cache, start, tracker, processors, restricted, params,
                             max(r.params.max_tokens for r in reqs))
        results = [r if r is not None else Completion("", len(q.ids), 0, "length")
                   for r, q in zip(tracker.results, reqs)]
        for req, result in zip(reqs, results):
            if req.params.logprobs is not None:
                result.logprobs = self.token_logprobs(req.ids, completion_tokens(self.tokenizer, result),
                                                      req.params.logprobs)
        return results

    def _decode(self, input_ids: Any, mask: Any, cache: Any, start: int, tracker: _RowTracker,
                processors: Sequence[Any], restricted: Any, params: SamplingParams, max_new: int) -> None:
        """ragtune's decode loop, written by hand instead of ``model.generate``: a row leaves the batch
        the step it finishes (its cache rows are dropped). ``generate`` keeps finished rows to the end
        of the batch's longest answer: on CMRC only 27.7% of its decode row-steps were useful
        (benchmarks/decode_waste.py). Otherwise it is ``generate``'s greedy/sampling loop: positions
        from the attention mask, logits of the last position, the processors on the whole batch, then
        temperature and top-p. ``tracker`` finishes rows (EOS, stop strings, max_tokens, cancel)."""
        import torch
        from transformers import DynamicCache, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        device = self.device
        ids, mask = input_ids.to(device), mask.to(device)
        if cache is None:   # what generate builds: sliding-window layers keep only their window
            cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        rows = torch.arange(ids.shape[0], device=device)        # batch positions of the rows still decoding
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        step_ids, step_pos = ids[:, start:], positions[:, start:]
        cache_pos = torch.arange(start, ids.shape[1], device=device)
        attn = None if bool(mask.all()) else mask                # no padding: generate drops the mask too
        warpers = LogitsProcessorList()
        if not params.greedy:
            warpers.append(TemperatureLogitsWarper(params.temperature))
            if params.top_p < 1.0:
                warpers.append(TopPLogitsWarper(params.top_p))
        for _ in range(max_new):
            if restricted is not None:
                restricted.select(rows)
            logits = self.model(input_ids=step_ids, attention_mask=attn, position_ids=step_pos, cache=cache,
                                cache_position=cache_pos, use_cache=True, logits_to_keep=1).logits[:, -1].float()
            if processors:   # they index rows by batch position: give them the whole batch
                full = logits.new_full((ids.shape[0], logits.shape[-1]), float("-inf"))
                full[rows] = logits
                for processor in processors:
                    full = processor(ids, full)
                logits = full[rows]
            if params.greedy:
                next_ids = logits.argmax(dim=-1)
            else:
                probs = torch.softmax(warpers(ids[rows], logits), dim=-1)
                next_ids = torch.multinomial(probs, num_samples=1)[:, 0]
            column = torch.full((ids.shape[0],), self.pad_id, dtype=ids.dtype, device=device)
            column[rows] = next_ids
            ids = torch.cat([ids, column[:, None]], dim=1)
            going = ~tracker(ids, None).to(device)[rows]
            if not bool(going.any()):
                return
            next_pos = step_pos[:, -1] + 1
            if not bool(going.all()):
                keep = going.nonzero()[:, 0]
                cache.batch_select_indices(keep)
                rows, next_ids, next_pos = rows[keep], next_ids[keep], next_pos[keep]
                attn = attn[keep] if attn is not None else None
            if attn is not None:
                attn = torch.cat([attn, attn.new_ones((attn.shape[0], 1))], dim=1)
            step_ids, step_pos, cache_pos = next_ids[:, None], next_pos[:, None], cache_pos[-1:] + 1

    def token_logprobs(self, prompt_ids: Sequence[int], token_ids: Sequence[int], k: int) -> list:
        """Per generated token its log-probability and the top ``k``, from one teacher-forced forward
        pass over prompt + completion (exact, unpadded; only the completion positions are projected
        to the vocabulary). Raw model distribution: temperature and top-p do not change it."""
        import torch

        from .base import TokenLogprob, TopLogprob

        if not token_ids:
            return []
        seq = torch.tensor([[*prompt_ids, *token_ids]], device=self.device)
        with self._model_lock, torch.inference_mode():
            logits = self.model(input_ids=seq, logits_to_keep=len(token_ids) + 1).logits[0, :-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        chosen = logp.gather(1, torch.tensor(token_ids, device=logp.device)[:, None])[:, 0].tolist()
        top_v, top_i = logp.topk(k, dim=-1) if k else (logp[:, :0], logp[:, :0].long())
        pieces = token_pieces(self.tokenizer, token_ids)
        out = []
        for n, tid in enumerate(token_ids):
            top = tuple(TopLogprob(int(i), self.tokenizer.decode([int(i)]), float(v))
                        for i, v in zip(top_i[n].tolist(), top_v[n].tolist()))
            out.append(TokenLogprob(int(tid), pieces[n], float(chosen[n]), top))
        return out

    def _prefix_kv(self, prefix: Sequence[int]) -> list[tuple[Any, Any]]:
        """Per layer the keys/values (batch 1) of ``prefix``, computed once for every prompt that starts
        with it. A config-less DynamicCache keeps every position in every layer (a sliding-window
        layer's cache would keep only the last window), so any first n tokens can be reused."""
        import torch
        from transformers import DynamicCache

        with self._model_lock, torch.inference_mode():
            cache = DynamicCache()
            # logits_to_keep=1: projecting every prefix position onto the 262k-row vocabulary cost
            # Gemma 3 more than the rest of the prefill (measured: 20 s of 23 s for 32 CMRC items)
            self.model(input_ids=torch.tensor([list(prefix)], device=self.device), cache=cache, use_cache=True,
                       logits_to_keep=1)
        self.prefix_stats["prefix_tokens_saved"] -= len(prefix)
        return [(keys, values) for keys, values, _ in cache]

    def grammar_context(self):
        """The constrained-decoding index of this engine's vocabulary (built on first use)."""
        from .constrained import grammar_context

        return grammar_context(self.tokenizer, self.model.get_output_embeddings().weight.shape[0], self.eos_ids)

    # -- synchronous helpers (infer, LocalLLM) ---------------------------------------------------------
    def generate_ids(self, prompts: Sequence[list[int]], params: SamplingParams,
                     progress: Callable[[list[int], list[Completion]], None] | None = None,
                     constraints: Sequence[Any] | None = None) -> list[Completion]:
        """Run many prompts directly (no queue), in length-sorted batches of ``max_batch_size`` so
        rows of a batch need little padding; prompts that share a prefix (several questions about one
        passage) are batched together and reuse that prefix's KV cache (``prefix_cache``).
        ``progress(indices, completions)`` after each batch. ``constraints``: per prompt, what it may
        generate (extractive decoding, see extractive.py), or None."""
        for ids in prompts:
            self.check_fits(ids, params.max_tokens)
        self.check_logit_bias(params)
        out: list[Completion | None] = [None] * len(prompts)
        cons = list(constraints) if constraints is not None else [None] * len(prompts)

        def request(i: int) -> _Request:
            return _Request(list(prompts[i]), params, constraint=cons[i])

        def finish(chunk: list[int], done: list[Completion]) -> None:
            for i, c in zip(chunk, done):
                out[i] = c
            if progress is not None:
                progress(chunk, done)

        groups, singles = self._shared_prefix_groups(prompts) if self.prefix_cache else ([], list(range(len(prompts))))
        self._run_groups(prompts, groups, request, finish)
        order = sorted(singles, key=lambda i: len(prompts[i]))
        for start in range(0, len(order), self.max_batch_size):
            chunk = order[start:start + self.max_batch_size]
            finish(chunk, self.run_batch([request(i) for i in chunk]))
        return out  # type: ignore[return-value]

    def _run_groups(self, prompts: Sequence[list[int]], groups: list[tuple[int, list[int]]],
                    request: Callable[[int], _Request], finish: Callable[[list[int], list[Completion]], None]) -> None:
        """The grouped prompts in length-sorted batches of ``max_batch_size`` across groups (a random
        eval sample has ~1.4 questions per passage: one batch per group would be a batch of ~2). A
        group's prefix is computed when its first member's batch comes and dropped after its last."""
        owner = {i: g for g, (_, members) in enumerate(groups) for i in members}
        left = {g: len(members) for g, (_, members) in enumerate(groups)}
        kvs: dict[int, list[tuple[Any, Any]]] = {}
        order = sorted(owner, key=lambda i: len(prompts[i]))
        for start in range(0, len(order), self.max_batch_size):
            chunk = order[start:start + self.max_batch_size]
            for g in dict.fromkeys(owner[i] for i in chunk):
                if g not in kvs:
                    prefix_len, members = groups[g]
                    kvs[g] = self._prefix_kv(prompts[members[0]][:prefix_len])
                    self.prefix_stats["groups"] += 1
                    self.prefix_stats["items"] += len(members)
            finish(chunk, self.run_batch([request(i) for i in chunk],
                                         [(groups[owner[i]][0], kvs[owner[i]]) for i in chunk]))
            for i in chunk:
                left[owner[i]] -= 1
                if not left[owner[i]]:
                    del kvs[owner[i]]

    def _shared_prefix_groups(self, prompts: Sequence[list[int]]) -> tuple[list[tuple[int, list[int]]], list[int]]:
        """([(prefix length, member indices)], indices of the rest): consecutive prompts in sorted order
        that share at least ``prefix_min_tokens``. A group's prefix stops before its members' last
        prompt token (generation needs one token to compute)."""
        order = sorted(range(len(prompts)), key=lambda i: prompts[i])
        groups: list[tuple[int, list[int]]] = []
        singles: list[int] = []
        current: list[int] = []
        shared = 0

        def close() -> None:
            if len(current) > 1 and shared >= self.prefix_min_tokens:
                groups.append((shared, list(current)))
            else:
                singles.extend(current)

        for i in order:
            if current:
                common = min(shared, common_prefix(prompts[current[0]], prompts[i]), len(prompts[i]) - 1)
                if common >= self.prefix_min_tokens:
                    current.append(i)
                    shared = common
                    continue
            close()
            current, shared = [i], len(prompts[i]) - 1
        close()
        return groups, singles

    def stats(self) -> dict[str, Any]:
        sizes = dict(sorted(self.batch_sizes.items()))
        return {"batches": sum(sizes.values()), "requests": sum(k * v for k, v in sizes.items()),
                "prefix_cache": dict(self.prefix_stats),
                "max_batch_size_seen": max(sizes, default=0), "batch_size_histogram": sizes,
                "max_batch_size": self.max_batch_size, "queue_depth": self._queue.qsize(),
                "cancelled": self.cancelled, "cancelled_tokens": self.cancelled_tokens}


def left_padded(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """(input ids, attention mask) of a left-padded batch: row i is [padding][prompts[i]]."""
    import torch

    total = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), total), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), total), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, total - len(p):] = torch.tensor(list(p))
        mask[i, total - len(p):] = 1
    return ids, mask


def completion_tokens(tokenizer: Any, completion: Completion) -> list[int]:
    """The generated tokens that make up ``completion.text``: a stop string can end the text inside
    the last tokens, whose logprobs must then not be reported."""
    ids = list(completion.token_ids)
    if completion.text == tokenizer.decode(ids, skip_special_tokens=True):
        return ids
    for m in range(len(ids) + 1):
        if len(tokenizer.decode(ids[:m], skip_special_tokens=True)) >= len(completion.text):
            return ids[:m]
    return ids


def token_pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """The text each token adds to the decoded completion (byte-level tokens that end inside a
    UTF-8 character add "" and the token completing it adds the whole character)."""
    pieces, done = [], ""
    for n in range(len(ids)):
        text = tokenizer.decode(list(ids[: n + 1]), skip_special_tokens=True)
        stable = text.rstrip("\ufffd")
        pieces.append(stable[len(done):] if stable.startswith(done) else text[len(done):])
        done = stable if stable.startswith(done) else text
    return pieces


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


def _batch_cache(kvs: Sequence[list[tuple[Any, Any]]], reuse: Sequence[int]):
    """A DynamicCache for a left-padded batch: row i holds the first ``reuse[i]`` positions of its
    prefix's keys/values, right-aligned at the cache end; the columns before are padding (masked)."""
    from transformers import DynamicCache

    length = max(reuse)
    layers = []
    for layer in range(len(kvs[0])):
        k0, v0 = kvs[0][layer]
        keys = k0.new_zeros((len(kvs), k0.shape[1], length, k0.shape[3]))
        values = v0.new_zeros((len(kvs), v0.shape[1], length, v0.shape[3]))
        for row, (kv, n) in enumerate(zip(kvs, reuse)):
            if n:
                keys[row, :, length - n:] = kv[layer][0][0, :, :n]
                values[row, :, length - n:] = kv[layer][1][0, :, :n]
        layers.append((keys, values))
    return DynamicCache(ddp_cache_data=layers)


def _context_limit(model: Any) -> int:
    cfg = getattr(model.config, "get_text_config", lambda: model.config)()
    return int(getattr(cfg, "max_position_embeddings", None) or 4096)
