"""The llama.cpp engine: a GGUF model in this process (llama-cpp-python), with parallel slots.

What it loads: a ``.gguf`` file, a folder written by ``ragtune export`` (``ragtune_export.json``:
GGUF + its HF tokenizer + the fine-tune's prompt settings + an optional GGUF LoRA adapter), or a
bundled model name (``gemma-3-270m``: its original Q4_K_M GGUF). A transformers folder or a
fine-tune output is refused with the ``ragtune export`` command that makes it loadable.

Same behaviour as the builtin engine, by construction:
- prompts are built by :func:`ragtune.core.prompt.build_prompt` and tokenised by the model's HF
  tokenizer (the export ships it; the bundled GGUF uses the converted model's), so a fine-tune sees
  byte-for-byte its training format, and answers are decoded by the same tokenizer;
- stop strings, EOS, ``max_tokens``, streaming with held-back stop-string prefixes and incomplete
  UTF-8, and ``finish_reason`` follow the builtin engine's ``_RowTracker`` rules;
- ``response_format`` uses the same constrained decoder (:mod:`ragtune.engine.constrained`).

Concurrency: ``slots`` parallel sequences share one llama.cpp context (one KV stream per slot).
A worker thread runs the loop llama.cpp's own server runs: every step decodes ONE batch holding
the next token of every generating slot plus prompt chunks of newly admitted requests, so
concurrent requests (and ``generate_ids`` over an eval set) are decoded together instead of one
after another. Sampling is done here in numpy from the logits (greedy = argmax, like the builtin
engine), which is what lets one grammar library constrain both engines.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import queue
import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import Field

from ..core.errors import BackendError, ConfigError, ModelNotFoundError, RagtuneError
from ..core.log import get_logger
from ..core.prompt import PromptConfig, build_prompt, encode_prompt, resolve_prompt
from .base import ENGINES, Completion, Engine, EngineSettings, Messages, SamplingParams
from .builtin import _held_back

log = get_logger(__name__)
EXPORT_MANIFEST = "ragtune_export.json"
INSTALL_HINT = "pip install 'ragtune[llamacpp]'   (builds llama.cpp for this CPU; a few minutes)"
_END_OF_TURN = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>")


class LlamaCppSettings(EngineSettings):
    """Settings of the llama.cpp engine."""
    slots: int = Field(4, ge=1, le=256, description="Requests decoded together (parallel llama.cpp sequences).")
    threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores).")
    max_model_len: int | None = Field(None, ge=16, description="Context limit per request (prompt + max_tokens); default: min(model's, 4096).")
    batch_tokens: int = Field(512, ge=16, description="Most tokens per llama.cpp decode call (prompt chunks + one per generating slot).")
    extra_buffers: Literal["auto", "on", "off"] = Field("auto", description="llama.cpp's extra weight layouts (AMX, repacked CPU kernels); auto: off on CPUs with AMX, whose ggml matmul crashes on q8_0 weights (ggml-org/llama.cpp#20824), on elsewhere.")


_LOG_CALLBACK: Any = None


def _llama_cpp():
    global _LOG_CALLBACK
    try:
        import llama_cpp
    except ImportError:
        raise BackendError("engine 'llamacpp' needs llama-cpp-python, which is not installed",
                           hint=INSTALL_HINT) from None
    if _LOG_CALLBACK is None:
        # llama.cpp's own log goes to ragtune's logger (errors as warnings, the rest at DEBUG, so
        # `ragtune -v` shows it); llama-cpp-python's callback maps ggml's levels off by one
        @llama_cpp.llama_log_callback
        def _route(level: int, text: bytes, _user: Any) -> None:
            log.log(logging.WARNING if level == 4 else logging.DEBUG, "llama.cpp: %s",
                    text.decode("utf-8", errors="replace").rstrip())

        _LOG_CALLBACK = _route  # keep a reference: the C side holds only the pointer
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
    return llama_cpp


def _use_extra_buffers(lc: Any, choice: str) -> bool:
    """Whether llama.cpp may put weights into its extra buffer types. Measured on a Xeon with AMX
    (llama-cpp-python 0.3.36): q8_0 models segfault in ggml's AMX matmul, the same models run with
    the extra buffers off; so ``auto`` turns them off where this build reports AMX."""
    if choice != "auto":
        return choice == "on"
    amx = b"AMX_INT8 = 1" in (lc.llama_print_system_info() or b"")
    if amx:
        log.info("llama.cpp: AMX CPU, extra weight buffers off (ggml's AMX matmul crashes on q8_0; "
                 "extra_buffers: on to try them)")
    return not amx


# -- what to load ---------------------------------------------------------------------------------------
@dataclass
class GgufSource:
    gguf: Path
    tokenizer_dir: Path
    adapter: Path | None = None
    name: str = "model"
    prompt: dict[str, Any] = field(default_factory=dict)
    eos_ids: list[int] | None = None
    config_dir: Path | None = None   # config.json / generation_config.json for the EOS rule


def _export_source(folder: Path, name: str | None) -> GgufSource:
    data = json.loads((folder / EXPORT_MANIFEST).read_text(encoding="utf-8"))
    adapter = folder / data["adapter_file"] if data.get("adapter_file") else None
    return GgufSource(folder / data["model_file"], folder / data.get("tokenizer", "tokenizer"), adapter,
                      name or data.get("name") or folder.name, data.get("prompt") or {}, data.get("eos_token_ids"))


def _check_gguf(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(24)
    if len(head) < 24 or head[:4] != b"GGUF":
        raise ConfigError(f"{path} is not a GGUF file (it does not start with a GGUF header)")


def _gguf_file_source(path: Path, name: str | None) -> GgufSource:
    _check_gguf(path)
    if (path.parent / EXPORT_MANIFEST).exists():
        src = _export_source(path.parent, name)
        src.gguf = path
        return src
    for cand in (path.parent / "tokenizer", path.parent):
        if (cand / "tokenizer_config.json").exists():
            return GgufSource(path, cand, name=name or path.stem, config_dir=path.parent)
    return GgufSource(path, cached_tokenizer(path), name=name or path.stem)


def cached_tokenizer(gguf: Path) -> Path:
    """An HF tokenizer for a bare GGUF, converted from it by transformers once and cached under
    ``$RAGTUNE_HOME/gguf-tokenizers`` (the conversion takes ~1 min for a 262k vocabulary)."""
    import hashlib

    from ..core.io import atomic_dir
    from ..core.paths import ragtune_home

    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:16]
    target = ragtune_home() / "gguf-tokenizers" / key
    if (target / "tokenizer_config.json").exists():
        return target
    from transformers import AutoTokenizer

    log.info("converting the tokenizer of %s for ragtune's prompt builder (once)", gguf)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with atomic_dir(target) as tmp:
        tok.save_pretrained(tmp)
    return target


def resolve_gguf(model: str, adapter: str | None = None, name: str | None = None) -> GgufSource:
    """``model`` (GGUF file, export folder, folder of one GGUF, bundled name) -> what to load."""
    from ..models.bundled import find_bundled

    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        src = _gguf_file_source(path, name)
    elif path.is_dir() and (path / EXPORT_MANIFEST).exists():
        src = _export_source(path, name)
    elif path.is_dir() and not (path / "config.json").exists() and sorted(path.glob("*.gguf")):
        src = _gguf_file_source(min(path.glob("*.gguf")), name or path.name)
    elif path.exists():
        raise ConfigError(f"engine 'llamacpp' loads GGUF models; {path} is not one (a transformers folder or a "
                          "fine-tune output)", hint=f"export it first: ragtune export {path} --output {path}-gguf "
                                                    "--quant q8_0, then serve the output folder")
    elif (bundled := find_bundled(model)) is not None and bundled.kind == "llm":
        from ..models import resolve_model
        from ..models.convert import assemble_gguf

        hf = resolve_model(bundled.name).path  # the converted copy: the builtin engine's tokenizer
        src = GgufSource(assemble_gguf(), Path(hf), name=name or bundled.name, config_dir=Path(hf))
    else:
        raise ModelNotFoundError(f"engine 'llamacpp': {model} is not a .gguf file, an export folder or a bundled model")
    if adapter is not None:
        src.adapter = _adapter_file(Path(adapter).expanduser())
    return src


def _adapter_file(path: Path) -> Path:
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir() and (path / EXPORT_MANIFEST).exists():
        data = json.loads((path / EXPORT_MANIFEST).read_text(encoding="utf-8"))
        if data.get("adapter_file"):
            return path / data["adapter_file"]
    if path.exists():
        raise ConfigError(f"engine 'llamacpp' takes a GGUF LoRA adapter; {path} is not one",
                          hint=f"convert a PEFT adapter with: ragtune export BASE --adapter {path} --lora --output DIR")
    raise ModelNotFoundError(f"adapter {path} does not exist")


def eos_token_ids(tokenizer: Any, config_dir: Path | None) -> list[int]:
    """The builtin engine's end-of-sequence rule: config + generation config EOS ids, the
    tokenizer's EOS and the chat end-of-turn tokens."""
    ids: set[int] = set()
    for fname in ("generation_config.json", "config.json"):
        p = config_dir / fname if config_dir else None
        if p is not None and p.exists():
            value = json.loads(p.read_text(encoding="utf-8")).get("eos_token_id")
            if value is not None:
                ids.update(value if isinstance(value, list) else [value])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in _END_OF_TURN if t in vocab)
    return sorted(int(i) for i in ids)


# -- one request ----------------------------------------------------------------------------------------
@dataclass
class _Request:
    ids: list[int]
    params: SamplingParams
    future: Future = field(default_factory=Future)
    on_delta: Callable[[str], None] | None = None


class _Slot:
    """A request being decoded in llama.cpp sequence ``seq``: prompt feeding, sampling state and
    the builtin engine's stop/stream rules."""

    def __init__(self, seq: int, req: _Request, tokenizer: Any, eos_ids: set[int], constraint: Any):
        import numpy as np

        self.seq, self.req, self.tok, self.eos_ids, self.constraint = seq, req, tokenizer, eos_ids, constraint
        self.fed = 0              # prompt tokens already in the KV cache
        self.out: list[int] = []  # generated tokens (EOS excluded)
        self.sent = 0
        self.pending: int | None = None  # last sampled token, fed in the next step
        self.result: Completion | None = None
        self.rng = np.random.default_rng(req.params.seed)

    @property
    def prefilling(self) -> bool:
        return self.fed < len(self.req.ids)

    def sample(self, logits) -> int:
        import numpy as np

        p = self.req.params
        if p.logit_bias or self.constraint is not None:
            logits = np.array(logits, dtype=np.float32)
        for token_id, bias in p.logit_bias:   # OpenAI's logit_bias, before any constraint's mask
            logits[token_id] += bias
        if self.constraint is not None:
            self.constraint.mask_numpy(logits)
        if p.greedy:
            return int(np.argmax(logits))
        z = np.asarray(logits, dtype=np.float64) / p.temperature
        z -= z.max()
        probs = np.exp(z)
        probs /= probs.sum()
        if p.top_p < 1.0:
            order = np.argsort(-probs)
            keep = np.cumsum(probs[order]) - probs[order] < p.top_p
            kept = order[keep]
            probs = probs[kept] / probs[kept].sum()
            return int(kept[self.rng.choice(len(kept), p=probs)])
        return int(self.rng.choice(len(probs), p=probs))

    def accept(self, token: int) -> bool:
        """Record a sampled token; True when the request is finished (``self.result`` set)."""
        if self.constraint is not None:
            self.constraint.consume(token)
        reason = None
        if token in self.eos_ids:
            reason = "stop"
        else:
            self.out.append(token)
        text = self.tok.decode(self.out, skip_special_tokens=True)
        stops = self.req.params.stop
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            text, reason = text[:cut], "stop"
        elif reason is None and len(self.out) >= self.req.params.max_tokens:
            reason = "length"
        if reason is not None:
            self.result = Completion(text, len(self.req.ids), len(self.out), reason, list(self.out))
            self._emit(text)
            return True
        self.pending = token
        stable = text.rstrip("\ufffd")
        self._emit(stable[: len(stable) - _held_back(stable, stops)])
        return False

    def _emit(self, text: str) -> None:
        if self.req.on_delta is not None and len(text) > self.sent:
            delta, self.sent = text[self.sent:], len(text)
            try:
                self.req.on_delta(delta)
            except Exception:  # a dead stream consumer must not stop the other slots
                log.debug("stream callback failed", exc_info=True)


# -- the engine -------------------------------------------------------------------------------------------
@ENGINES.register("llamacpp")
class LlamaCppEngine(Engine):
    """A GGUF model on llama.cpp with ``slots`` parallel sequences.

    >>> engine = LlamaCppEngine.load("out/run1-gguf")        # written by `ragtune export`
    >>> engine.generate(["What is 2+2?"], SamplingParams(max_tokens=8))[0].text
    """

    Settings = LlamaCppSettings
    description = "llama.cpp (GGUF, CPU) in this process; parallel slots (pip install 'ragtune[llamacpp]')"
    structured_output = True

    def __init__(self, source: GgufSource, tokenizer: Any, settings: LlamaCppSettings, prompt: PromptConfig):
        if settings.slots > settings.batch_tokens:
            raise ConfigError(f"slots ({settings.slots}) cannot exceed batch_tokens ({settings.batch_tokens}): every "
                              "generating slot puts one token into each decode batch")
        lc = _llama_cpp()
        self.lc, self.source, self.tokenizer, self.settings = lc, source, tokenizer, settings
        self.name, self.prompt = source.name, prompt
        lc.llama_backend_init()
        mparams = lc.llama_model_default_params()
        mparams.use_extra_bufts = _use_extra_buffers(lc, settings.extra_buffers)
        self._model = lc.llama_model_load_from_file(str(source.gguf).encode(), mparams)
        if not self._model:
            raise BackendError(f"llama.cpp could not load {source.gguf}",
                               hint="is it a complete GGUF of an architecture this llama.cpp build knows?")
        self._vocab = lc.llama_model_get_vocab(self._model)
        self.n_vocab = lc.llama_vocab_n_tokens(self._vocab)
        train_ctx = lc.llama_model_n_ctx_train(self._model)
        self.max_model_len = settings.max_model_len or min(train_ctx, 4096)
        if self.max_model_len > train_ctx:
            raise ConfigError(f"max_model_len {self.max_model_len} exceeds the model's context of {train_ctx} tokens")
        self.slots = settings.slots
        threads = settings.threads or os.cpu_count() or 1
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = self.max_model_len * self.slots
        cparams.n_seq_max = self.slots
        cparams.n_batch = cparams.n_ubatch = settings.batch_tokens
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.kv_unified = False   # one KV stream per slot: a slot never runs out of room
        cparams.no_perf = True
        self._ctx = lc.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            lc.llama_model_free(self._model)
            raise BackendError(f"llama.cpp could not create a context of {cparams.n_ctx} tokens for {source.gguf}")
        self._memory = lc.llama_get_memory(self._ctx)
        self._adapter = None
        if source.adapter is not None:
            self._apply_adapter(source.adapter)
        self.eos_ids = set(source.eos_ids or eos_token_ids(tokenizer, source.config_dir or source.tokenizer_dir))
        self._batch = lc.llama_batch_init(settings.batch_tokens, 0, 1)
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self.active_histogram: Counter[int] = Counter()   # generating slots per decode step -> steps
        log.info("llama.cpp engine: %s, %d slots x %d tokens, %d threads%s", source.gguf.name, self.slots,
                 self.max_model_len, threads, f", LoRA {source.adapter.name}" if source.adapter else "")

    def _apply_adapter(self, path: Path) -> None:
        lc = self.lc
        self._adapter = lc.llama_adapter_lora_init(self._model, str(path).encode())
        if not self._adapter:
            raise BackendError(f"llama.cpp could not load the LoRA adapter {path}",
                               hint="was it exported for this base model (same architecture and shapes)?")
        adapters = (lc.llama_adapter_lora_p_ctypes * 1)(self._adapter)
        scales = (ctypes.c_float * 1)(1.0)
        if lc.llama_set_adapters_lora(self._ctx, adapters, 1, scales) != 0:
            raise BackendError(f"llama.cpp could not apply the LoRA adapter {path}")

    # -- loading ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, model: str, adapter: str | None = None, *, settings: EngineSettings | None = None,
             prompt: PromptConfig | dict | str | None = None, name: str | None = None,
             **setting_values: Any) -> LlamaCppEngine:
        """Load a GGUF (file, export folder or bundled name) plus an optional GGUF LoRA ``adapter``.
        ``prompt``: explicit settings over an export's saved ones, over the defaults."""
        from transformers import AutoTokenizer

        if settings is None:
            settings = LlamaCppSettings.build("llamacpp engine settings", **setting_values)
        elif setting_values:
            settings = settings.model_copy(update=setting_values)
        settings = cast(LlamaCppSettings, settings)   # engine_settings() routes each engine its own Settings
        _llama_cpp()
        source = resolve_gguf(model, adapter, name)
        tokenizer = AutoTokenizer.from_pretrained(source.tokenizer_dir)
        explicit = PromptConfig.coerce(prompt) if prompt is not None else PromptConfig()
        trained = PromptConfig.coerce(source.prompt) if source.prompt else None
        return cls(source, tokenizer, settings, resolve_prompt(explicit, trained, f"llamacpp engine, {model}"))

    # -- prompts ----------------------------------------------------------------------------------
    def encode_chat(self, messages: Messages | str, prompt: PromptConfig | None = None) -> list[int]:
        return encode_prompt(self.tokenizer, build_prompt(self.tokenizer, messages, prompt or self.prompt))

    def encode_text(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, text)

    @property
    def vocab_size(self) -> int:
        return int(self.n_vocab)

    def grammar_context(self):
        from .constrained import grammar_context

        return grammar_context(self.tokenizer, self.n_vocab, sorted(self.eos_ids))

    # -- requests ---------------------------------------------------------------------------------
    def submit(self, ids: list[int], params: SamplingParams,
               on_delta: Callable[[str], None] | None = None) -> Future:
        if self._closed:
            raise RagtuneError("the engine is closed")
        self.check_fits(ids, params.max_tokens)
        if not ids:
            raise ConfigError("the prompt is empty (no tokens)")
        bad = [t for t in ids if not 0 <= t < self.n_vocab]
        if bad:
            raise ConfigError(f"token id {bad[0]} is outside this model's vocabulary of {self.n_vocab}")
        self.check_logit_bias(params)
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._loop, name="ragtune-llamacpp", daemon=True)
                self._worker.start()
        req = _Request(list(ids), params, on_delta=on_delta)
        self._queue.put(req)
        return req.future

    def generate_ids(self, prompts: Sequence[list[int]], params: SamplingParams,
                     progress: Callable[[list[int], list[Completion]], None] | None = None) -> list[Completion]:
        """All prompts through the slots (decoded ``slots`` at a time), results in input order."""
        for ids in prompts:
            self.check_fits(ids, params.max_tokens)
        futures = {self.submit(list(ids), params): i for i, ids in enumerate(prompts)}
        out: list[Completion | None] = [None] * len(prompts)
        for fut in as_completed(futures):
            i = futures[fut]
            out[i] = fut.result()
            if progress is not None:
                progress([i], [out[i]])  # type: ignore[list-item]
        return out  # type: ignore[return-value]

    # -- the decode loop --------------------------------------------------------------------------
    def _loop(self) -> None:
        active: dict[int, _Slot] = {}
        waiting: deque[_Request] = deque()
        free = list(range(self.slots))
        stopping = False
        while True:
            idle = not active and not waiting and not stopping
            stopping = self._admit(waiting, active, free, block=idle) or stopping
            if not active:
                if stopping and not waiting:
                    return  # close(): everything queued before it is done
                continue
            try:
                self._step(active, free)
            except BaseException as exc:  # every client in flight gets the error; the loop lives on
                log.exception("llama.cpp decode step failed")
                for slot in list(active.values()):
                    self._finish(slot, active, free, error=exc)

    def _admit(self, waiting: deque, active: dict[int, _Slot], free: list[int], block: bool) -> bool:
        """Move queued requests into free slots (waiting for one when ``block``); True once
        close() was requested."""
        stopping = False
        incoming: list[_Request | None] = [self._queue.get()] if block else []
        while True:
            try:
                incoming.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for req in incoming:
            if req is None:
                stopping = True
            else:
                waiting.append(req)
        while waiting and free:
            req = waiting.popleft()
            if not req.future.set_running_or_notify_cancel():
                continue
            try:
                fmt = req.params.response_format
                constraint = self.grammar_context().constraint(fmt) if fmt is not None else None
            except RagtuneError as exc:  # this request's format failed to compile: its error only
                req.future.set_exception(exc)
                continue
            seq = free.pop(0)
            self.lc.llama_memory_seq_rm(self._memory, seq, -1, -1)
            active[seq] = _Slot(seq, req, self.tokenizer, self.eos_ids, constraint)
        return stopping

    def _step(self, active: dict[int, _Slot], free: list[int]) -> None:
        """One llama_decode over every active slot; sample where logits came back."""
        import numpy as np

        batch, budget, rows = self._batch, self.settings.batch_tokens, []
        n = 0

        def add(token: int, pos: int, seq: int, logits: bool) -> None:
            nonlocal n
            batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, pos, 1
            batch.seq_id[n][0], batch.logits[n] = seq, int(logits)
            n += 1

        generating = [s for s in active.values() if not s.prefilling]
        for slot in generating:  # one token each: the one sampled last step
            assert slot.pending is not None   # a slot past its prompt has sampled a token
            add(slot.pending, slot.fed + len(slot.out) - 1, slot.seq, True)
            rows.append((n - 1, slot))
        for slot in [s for s in active.values() if s.prefilling]:
            room = budget - n
            if room <= 0:
                break
            chunk = slot.req.ids[slot.fed: slot.fed + room]
            for k, token in enumerate(chunk):
                last = slot.fed + k == len(slot.req.ids) - 1
                add(token, slot.fed + k, slot.seq, last)
            slot.fed += len(chunk)
            if not slot.prefilling:
                rows.append((n - 1, slot))
        batch.n_tokens = n
        rc = self.lc.llama_decode(self._ctx, batch)
        if rc != 0:
            raise BackendError(f"llama_decode failed (code {rc}) on a batch of {n} tokens")
        self.counters["decode_calls"] += 1
        self.counters["tokens_decoded"] += n
        self.active_histogram[len(generating)] += 1
        for row, slot in rows:
            ptr = self.lc.llama_get_logits_ith(self._ctx, row)
            logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
            if slot.accept(slot.sample(logits)):
                self._finish(slot, active, free)

    def _finish(self, slot: _Slot, active: dict[int, _Slot], free: list[int], error: BaseException | None = None) -> None:
        active.pop(slot.seq, None)
        self.lc.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
        free.append(slot.seq)
        free.sort()
        self.counters["requests"] += 1
        if error is not None:
            if not slot.req.future.done():
                slot.req.future.set_exception(error)
            return
        assert slot.result is not None   # accept() returned True
        self.counters["completion_tokens"] += slot.result.completion_tokens
        slot.req.future.set_result(slot.result)

    # -- lifecycle ----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {"slots": self.slots, **dict(self.counters),
                "generating_slots_histogram": dict(sorted(self.active_histogram.items())),
                "queue_depth": self._queue.qsize(), "gguf": str(self.source.gguf),
                "adapter": str(self.source.adapter) if self.source.adapter else None}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout=60)
        lc = self.lc
        lc.llama_batch_free(self._batch)
        lc.llama_free(self._ctx)
        if self._adapter is not None:
            lc.llama_adapter_lora_free(self._adapter)
        lc.llama_model_free(self._model)
