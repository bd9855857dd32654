"""ragtune's own LLM trainer: LoRA / freeze / full, one loop for CPU, CUDA and torchrun (DDP/FSDP).

Why not Hugging Face ``Trainer``: it computes full-vocabulary logits at every position (our loss
projects only labelled positions: ~2x on CPU for instruction data), and it does not give a resumed
run the exact same data order as an uninterrupted one. The loop is small; the pieces (peft, AdamW,
transformers schedulers, DDP) are the standard ones.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...core.errors import ConfigError, Terminated, interrupts_deferred  # Terminated: SIGTERM, handled like Ctrl-C
from ...core.errors import sigterm_as_interrupt as _sigterm_as_interrupt
from ...core.log import get_logger, log_to_file
from ..base import FinetuneResult
from .config import LLMFinetuneConfig

log = get_logger(__name__)
PROGRESS_FILE = "progress.jsonl"


TrainResult = FinetuneResult  # the builtin trainer's result is the protocol's

# -- process group --------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_dist() -> Dist:
    """Under torchrun (WORLD_SIZE>1) join the process group: gloo on CPU, nccl on CUDA."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world == 1:
        return Dist(device="cuda" if cuda else "cpu")
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world, local, f"cuda:{local}" if cuda else "cpu")


# -- validation before any weight is read -----------------------------------------------------------
def prepare(cfg: LLMFinetuneConfig, method: Any):
    """Everything that can fail on bad input, without loading the model: paths, output dir, data,
    tokenization, method targets. Returns (model_dir, tokenizer, train, val, usage)."""
    from transformers import AutoTokenizer

    from ...models import resolve_model
    from .data import held_out_indices, split_validation, tokenized_dataset, usage_message
    from .methods import meta_model

    cfg.require_paths()
    out = Path(str(cfg.output))
    from ...core.io import check_output

    check_output(out, directory=True)
    if out.exists() and any(out.iterdir()) and not (cfg.resume or cfg.overwrite_output_dir):
        raise ConfigError(f"output dir {out} is not empty",
                          hint="pass resume=True (--resume) to continue or overwrite_output_dir=True")
    method.validate(cfg)
    resolved = resolve_model(str(cfg.base), "llm")
    if resolved.gguf_file:
        raise ConfigError(f"{cfg.base} is a GGUF file; fine-tuning needs HF weights",
                          hint="use a bundled name (converted automatically) or a safetensors dir")
    model_dir = str(resolved.path)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    samples, total = tokenized_dataset(cfg.train, tokenizer, model_dir, cfg.prompt_config(), cfg.cutoff_len,
                                cfg.max_samples, cfg.tokenize_cache)
    samples = method.attach_targets(cfg, tokenizer, samples)
    held = held_out_indices(samples, cfg.val_size, cfg.seed, cfg.val_split, cfg.pack_min_prefix)
    train, val = split_validation(samples, held)
    if held:
        log.info("held out %d of %d records (val_split=%s%s)", len(held), len(samples), cfg.val_split,
                 ": whole prompt groups, so no held-out passage is trained on" if cfg.val_split == "prompt_group"
                 else "")
    if not getattr(cfg, "fsdp", False):   # FSDP-sharded full models are too big for a meta copy check
        method.check(cfg, meta_model(model_dir))
    usage = usage_message(len(samples), total, cfg.train, cfg.max_samples)
    return model_dir, tokenizer, train, val, usage, dev_items(cfg, held)


def dev_items(cfg: LLMFinetuneConfig, held: list[int]):
    """The seeded dev slice of the dev metrics (None when none are configured): from ``dev_file``, or
    the held-out records ``held`` of the val split."""
    from . import dev
    from .data import load_conversations

    if not cfg.dev_metrics:
        return None
    if cfg.dev_file:
        items = dev.from_eval_file(cfg.dev_file)
    else:
        if not cfg.val_size:
            raise ConfigError("dev_metrics need held-out records: set val_size (records kept out of training) "
                              "or dev_file (an eval set)")
        convs = load_conversations(str(cfg.train), cfg.max_samples)
        items = dev.from_conversations([convs[i] for i in held])
    return dev.seeded_slice(items, cfg.dev_samples, cfg.seed)


# -- model --------------------------------------------------------------------------------------------
def attention_for(cfg: LLMFinetuneConfig, device: str) -> str:
    """Measured on the 2-core CPU (gemma-3-270m, LoRA, 445-token samples): a train step with eager
    attention runs at 341 tok/s, with PyTorch's SDPA (flash kernel for CPU) at 240 tok/s, its
    backward being 20% of the step. On CUDA SDPA/flash is the right choice."""
    if cfg.attn_implementation != "auto":
        return cfg.attn_implementation
    return "sdpa" if device.startswith("cuda") else "eager"


def load_model(cfg: LLMFinetuneConfig, method: Any, model_dir: str, dist: Dist):
    """(model, compute_dtype, use_autocast). Adapter methods: base in the compute dtype, adapters
    fp32 (peft). Others: fp32 master weights for what trains, frozen weights in the compute dtype,
    autocast."""
    from transformers import AutoModelForCausalLM

    from ...models.device import resolve_dtype

    dtype = resolve_dtype(cfg.dtype, dist.device)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=method.load_dtype(dtype),
                                                 attn_implementation=attention_for(cfg, dist.device))
    model = method.prepare(cfg, model)
    method.after_prepare(cfg, model)
    autocast = method.uses_autocast(dtype)
    if autocast:
        for p in model.parameters():
            if not p.requires_grad:
                p.data = p.data.to(dtype)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    model.to(dist.device)
    model.config.use_cache = False
    return model, dtype, autocast


def wrap_distributed(model, cfg, dist: Dist, method: Any = None):
    """LossModule, wrapped in DDP (or FSDP for full FT) under torchrun."""
    from .loss import LossModule

    module = LossModule(model, getattr(method, "loss_fn", None))
    if dist.world == 1:
        return module
    if getattr(cfg, "fsdp", False):
        return _fsdp(module, model, dist)
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [dist.local_rank] if dist.device.startswith("cuda") else None
    return DDP(module, device_ids=ids)


def _fsdp(module, model, dist: Dist):  # pragma: no cover - needs several CUDA GPUs
    """FSDP2: shard every decoder block, then the root. Untested here (no GPU on the dev box)."""
    if not dist.device.startswith("cuda"):
        raise ConfigError("fsdp needs CUDA GPUs under torchrun")
    from torch.distributed.fsdp import fully_shard

    from .methods import decoder_layers

    for layer in decoder_layers(model):
        fully_shard(layer)
    fully_shard(module)
    return module


def trainable_state(model, dist: Dist) -> dict:
    """name -> tensor (CPU) of trainable params; gathers full tensors under FSDP."""
    import torch

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if any(type(p).__name__ == "DTensor" for p in model.parameters()):  # pragma: no cover - FSDP
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {n: full[n] for n in names if n in full}
    params = dict(model.named_parameters())
    return {n: params[n].detach().to("cpu", torch.float32).clone() for n in names}


# -- checkpoints (see checkpoint.py) -------------------------------------------------------------------------
def save_checkpoint(out: Path, model, optimizer, scheduler, state: dict, dist: Dist, limit: int | None):
    from . import checkpoint

    weights = trainable_state(model, dist)   # every rank takes part (FSDP gathers); rank 0 writes
    if not dist.main:
        return None
    path = checkpoint.save(out / "checkpoints" / f"step-{state['step']}", weights, optimizer, scheduler, state)
    checkpoint.prune(out, limit)
    log.info("checkpoint saved: %s", path)
    return path


# -- the loop -------------------------------------------------------------------------------------------
def train(cfg: LLMFinetuneConfig, method: Any = None) -> FinetuneResult:
    method = method or cfg.method_object
    model_dir, tokenizer, train_set, val_set, usage, dev = prepare(cfg, method)
    dist = setup_dist()
    out = Path(str(cfg.output))
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.yaml")  # first: a crashed run still says what it was
    with log_to_file(out / "train.log") if dist.main else contextlib.nullcontext():
        log.info(usage)  # never truncate silently (LLaMA-Factory's max_samples does)
        return _train(cfg, method, dist, out, model_dir, tokenizer, train_set, val_set, dev)


def _train(cfg, method, dist, out, model_dir, tokenizer, train_set, val_set, dev=None) -> FinetuneResult:
    import torch

    log.info("method %s on %s: %d train / %d val samples, world size %d, device %s",
             method.name, cfg.base, len(train_set), len(val_set), dist.world, dist.device)
    torch.manual_seed(cfg.seed)
    model, dtype, autocast = load_model(cfg, method, model_dir, dist)
    engine = wrap_distributed(model, cfg, dist, method)
    loop = Loop(cfg, dist, model, engine, tokenizer, train_set, val_set, dtype, autocast, out, dev, method)
    metrics = loop.run()
    loop.restore_best()
    # every rank takes part (FSDP gathers full tensors); only rank 0 writes
    trained = trainable_state(model, dist) if not method.trains_adapter and cfg.merge else None
    if dist.main:
        result = finish(cfg, method, model, tokenizer, model_dir, out, metrics, trained)
    else:
        result = FinetuneResult(out, metrics)
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()
    return result


class Loop:
    def __init__(self, cfg, dist, model, engine, tokenizer, train_set, val_set, dtype, autocast, out, dev=None,
                 method=None):
        from .dev import DevEvaluator

        self.cfg, self.dist, self.model, self.engine = cfg, dist, model, engine
        self.method = method
        self.tokenizer = tokenizer
        self.dev = (DevEvaluator(dev, cfg.dev_metrics, cfg.prompt, cfg.dev_max_tokens, cfg.dev_batch_size,
                                 cfg.dev_extractive) if dev else None)
        self.best: tuple[float, int] | None = None          # (dev value, step) of the best eval
        self.best_dev: dict[str, Any] = {}
        self.evals_since_best = 0
        self.stop_reason: str | None = None
        self.budget: dict[str, Any] = {}
        self._replanned: set[float] = set()
        self.val_set, self.out = val_set, out
        self.dtype, self.autocast = dtype, autocast
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.records = len(train_set)
        self.packing: dict[str, Any] = {}
        self.train_set = self._maybe_pack(train_set)
        self.global_batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * dist.world
        self.lengths = [len(s) for s in self.train_set]
        steps_per_epoch = len(self._batches(0))
        if steps_per_epoch == 0:
            raise ConfigError(f"{len(train_set)} samples make no full global batch of {self.global_batch}")
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = cfg.max_steps or math.ceil(cfg.num_train_epochs * steps_per_epoch)
        self.history: list[dict] = []

    def _maybe_pack(self, samples):
        """Packs of records sharing a prompt prefix (packing.py), when on and the model takes the masks."""
        from . import packing

        cfg = self.cfg
        if not getattr(cfg, "pack_shared_prefix", False):
            return samples
        packs = packing.build_packs(samples, min_prefix=cfg.pack_min_prefix,
                                    max_len=cfg.pack_max_len or 2 * cfg.cutoff_len)
        info = packing.stats(packs, samples)
        if info["sequences"] == len(samples):
            log.info("pack_shared_prefix: no records share a prompt prefix of %d+ tokens; training unpacked",
                     cfg.pack_min_prefix)
            return samples
        problem = self._packing_problem(packs, samples)
        if problem:
            log.info("pack_shared_prefix: %s; training unpacked", problem)
            return samples
        self.packing = info
        log.info("packed %d records into %d sequences (%.2f records each): %.2fx fewer tokens",
                 info["records"], info["sequences"], info["records_per_sequence"], info["token_ratio"])
        return packs

    def _packing_problem(self, packs, samples) -> str | None:
        """Why this model cannot train packed (None: it can). The first multi-record pack's per-token
        losses, packed, must equal its records' losses alone (same tokens, same positions)."""
        import torch

        from . import packing
        from .batching import collate

        pack = next(p for p in packs if len(p.members) > 1)
        self.model.eval()    # no dropout in the comparison
        try:
            with torch.no_grad(), self._ctx():
                ids, masks, labels, pos = packing.collate_packs([pack], self.pad_id, self.dtype,
                                                                packing.sliding_window_of(self.model))
                packed, n = self._loss(ids, masks, labels, pos)
                alone = 0.0
                for i in pack.members:
                    a, b, c = collate([samples[i]], self.pad_id)
                    alone += float(self._loss(a, b, c, None)[0])
        except Exception as exc:  # the decoder rejected the masks: say so and train unpacked
            return f"{type(self.model).__name__} does not take packed attention masks ({type(exc).__name__}: {exc})"
        finally:
            self.model.train()
        tol = 1e-4 if self.dtype == torch.float32 else 2e-2
        if abs(float(packed) - alone) > tol * max(abs(alone), 1.0):
            return (f"{type(self.model).__name__} gives another loss packed ({float(packed):.5f}) than unpacked "
                    f"({alone:.5f})")
        return None

    def _loss(self, ids, masks, labels, pos):
        from .loss import answer_only_loss_sum

        dev = self.dist.device
        masks = {k: v.to(dev) for k, v in masks.items()} if isinstance(masks, dict) else masks.to(dev)
        return answer_only_loss_sum(self.model, ids.to(dev), masks, labels.to(dev),
                                    pos.to(dev) if pos is not None else None)

    def _collate(self, items):
        """(ids, mask, labels, position_ids or None, real tokens) of a micro-batch, on the device."""
        from . import packing
        from .batching import collate

        dev = self.dist.device
        if self.packing:
            ids, masks, labels, pos = packing.collate_packs(items, self.pad_id, self.dtype,
                                                            packing.sliding_window_of(self.model))
            masks = {k: v.to(dev) for k, v in masks.items()} if isinstance(masks, dict) else masks.to(dev)
            return ids.to(dev), masks, labels.to(dev), pos.to(dev), sum(len(p) for p in items)
        ids, mask, labels = collate(items, self.pad_id)
        return ids.to(dev), mask.to(dev), labels.to(dev), None, int(mask.sum())

    def _batches(self, epoch: int):
        from .batching import epoch_batches

        return epoch_batches(self.lengths, self.global_batch, self.cfg.seed, epoch, self.cfg.group_by_length,
                             drop_last=self.dist.world > 1)

    def _optimizer(self):
        import torch
        from transformers import get_scheduler

        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.cfg.learning_rate, weight_decay=self.cfg.weight_decay)
        sched = get_scheduler(self.cfg.lr_scheduler_type, opt,
                              num_warmup_steps=int(self.cfg.warmup_ratio * self.total_steps),
                              num_training_steps=self.total_steps)
        return opt, sched

    def _ctx(self):
        import contextlib

        import torch

        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.dist.device.split(":")[0], dtype=self.dtype)

    def step(self, batch: list[int]) -> tuple[float, int, int]:
        """One optimizer step's forward/backward over this rank's share of a global batch.
        Loss = sum of token CE / labelled tokens of the WHOLE global batch (every rank knows the
        batch, so no communication is needed), times world size because DDP averages gradients."""
        import contextlib

        from .batching import labelled_tokens, micro_batches, split_by_attention_area

        cfg, dist = self.cfg, self.dist
        n_tokens = sum(labelled_tokens(self.train_set[i]) for i in batch)
        micros = micro_batches(batch, cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps,
                               dist.world, dist.rank)
        # no micro-batch may need more attention memory than an unpacked one of cutoff_len rows
        max_area = cfg.per_device_train_batch_size * cfg.cutoff_len ** 2
        micros = [chunk for micro in micros for chunk in split_by_attention_area(micro, self.lengths, max_area)]
        loss_sum, seen = 0.0, 0
        for k, micro in enumerate(micros):
            items = [self.train_set[i] for i in micro]
            ids, mask, labels, pos, real = self._collate(items)
            extra = self.method.batch_extras(items, dist.device) if self.method is not None else None
            sync = k == len(micros) - 1 or dist.world == 1
            no_sync = self.engine.no_sync if (not sync and hasattr(self.engine, "no_sync")) else contextlib.nullcontext
            with no_sync(), self._ctx():
                loss, _ = self.engine(ids, mask, labels, pos, extra)
                (loss * dist.world / max(n_tokens, 1)).backward()
            loss_sum += float(loss.detach())
            seen += real
        return loss_sum, n_tokens, seen

    @staticmethod
    def _global_sum(value: float, dist) -> float:
        if dist.world == 1:
            return value
        import torch
        import torch.distributed as tdist

        t = torch.tensor([value], dtype=torch.float64, device=dist.device)
        tdist.all_reduce(t)
        return float(t)

    def evaluate(self) -> float | None:
        import torch

        from .batching import collate
        from .loss import answer_only_loss_sum

        if not self.val_set:
            return None
        mine = self.val_set[self.dist.rank::self.dist.world]
        bs = self.cfg.per_device_eval_batch_size
        total, count = 0.0, 0
        self.model.eval()
        with torch.no_grad(), self._ctx():
            for i in range(0, len(mine), bs):
                ids, mask, labels = (t.to(self.dist.device) for t in collate(mine[i:i + bs], self.pad_id))
                loss, n = answer_only_loss_sum(self.model, ids, mask, labels)
                total, count = total + float(loss), count + n
        self.model.train()
        return self._global_sum(total, self.dist) / max(self._global_sum(count, self.dist), 1)

    def run(self) -> dict:
        import torch
        from tqdm.auto import tqdm

        from . import checkpoint

        cfg, dist = self.cfg, self.dist
        opt, sched = self._optimizer()
        identity = checkpoint.run_identity(cfg)
        state: dict[str, Any] = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "tokens": 0, "history": [],
                                 "identity": identity, "train_seconds": 0.0, "best": None}
        found = checkpoint.resume_point(self.out, cfg, identity)
        if found is not None:
            path, state = found
            checkpoint.load(path, self.model, opt, sched)
            sched = self._restore_clock(state, opt, sched)
            log.info("resumed from %s (step %d)", path, state["step"])
        elif dist.main:
            (self.out / PROGRESS_FILE).unlink(missing_ok=True)   # a fresh start: a fresh progress log
        self.history = state["history"]
        self.best = tuple(state["best"]) if state.get("best") else None  # type: ignore[assignment]
        self.best_dev = dict(state.get("best_dev") or {})
        params = [p for p in self.model.parameters() if p.requires_grad]
        bar = tqdm(total=self.total_steps, initial=state["step"], disable=not dist.main, desc="finetune",
                   unit="step", dynamic_ncols=True)
        self.model.train()
        started, tokens_run, window = time.perf_counter(), 0, []
        self.started, self.seconds_before = started, float(state.get("train_seconds", 0.0))
        self.last_save = time.monotonic()
        try:
            with _sigterm_as_interrupt():
                while state["step"] < self.total_steps and not self.stop_reason:
                    batches = self._batches(state["epoch"])
                    for b in range(state["batch_in_epoch"], len(batches)):
                        if state["step"] >= self.total_steps or self.stop_reason:
                            break
                        loss_sum, n_tok, seen = self.step(batches[b])
                        records = sum(len(getattr(self.train_set[i], "members", (i,))) for i in batches[b])
                        loss = self._global_sum(loss_sum, dist) / max(n_tok, 1)
                        checkpoint.check_finite(loss, state["step"] + 1, self.out)
                        with interrupts_deferred():   # the update and its step count, or neither
                            if cfg.max_grad_norm:
                                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                            opt.step()
                            sched.step()
                            opt.zero_grad(set_to_none=True)
                            seen = int(self._global_sum(seen, dist))
                            state.update(step=state["step"] + 1, batch_in_epoch=b + 1,
                                         tokens=state["tokens"] + seen, train_seconds=self.train_seconds(),
                                         records=state.get("records", 0) + records)
                            # in the same block: a SIGTERM deferred to its end must not checkpoint a
                            # step whose loss is missing from the history (a resumed curve lost it)
                            entry: dict[str, Any] = {"step": state["step"], "loss": loss}
                            self.history.append(entry)
                        tokens_run += seen
                        window.append(loss)
                        sched = self._plan_budget(state, opt, sched)
                        self._sync_stop()
                        self._after_step(state, entry, window, tokens_run, started, bar, opt, sched, sched.get_last_lr()[0])
                    else:
                        state.update(epoch=state["epoch"] + 1, batch_in_epoch=0)
                        if cfg.eval_steps is None and (self.val_set or self.dev):
                            self._log_eval(state)
        except KeyboardInterrupt as exc:
            bar.close()
            path = self._save(opt, sched, state, None)
            why = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
            log.info("%s at step %d; checkpoint %s (continue with --resume)", why, state["step"], path)
            raise
        bar.close()
        elapsed = self.train_seconds()   # a resumed run reports all of its training, not its last part
        if (self.val_set or self.dev) and self.last_eval_step != state["step"]:
            self._log_eval(state)
        if cfg.save_steps is None or state["step"] % cfg.save_steps:
            self._save(opt, sched, state, cfg.save_total_limit)
        train_losses = [h["loss"] for h in self.history if "loss" in h]
        eval_losses = [h["eval_loss"] for h in self.history if "eval_loss" in h]
        devs = [h for h in self.history if "dev" in h]
        if self.budget:
            self.budget["actual_train_s"] = round(self.train_seconds(), 1)
            self.budget["actual_steps"] = state["step"]
        return {"method": cfg.method, "steps": state["step"], "epochs": state["step"] / self.steps_per_epoch,
                "train_samples": self.records, "train_sequences": len(self.train_set),
                "val_samples": len(self.val_set), "packing": self.packing or None,
                "records_per_second": round(state.get("records", 0) / elapsed, 3) if elapsed > 0 else None,
                "first_loss": train_losses[0] if train_losses else None,
                "final_loss": train_losses[-1] if train_losses else None,
                "eval_loss": eval_losses[-1] if eval_losses else None,
                "dev": devs[-1]["dev"] if devs else None,
                "best": {"step": self.best[1], "selected_by": self.select_metric, **self.best_dev}
                        if self.best else None,
                "stopped": self.stop_reason, "time_budget": self.budget or None,
                "train_tokens": state["tokens"], "train_runtime_s": round(elapsed, 3),
                "tokens_per_second": round(state["tokens"] / elapsed, 2) if elapsed > 0 else None,
                "dtype": str(self.dtype).replace("torch.", ""), "world_size": dist.world,
                "history": self.history}

    last_eval_step = -1
    last_eval_time = 0.0
    eval_seconds = 0.0        # wall time spent in evals (the time budget plans steps without it)
    eval_count = 0
    _plan_anchor: tuple[int, float] = (0, 0.0)

    # what the time budget and the eval clock know, kept in every checkpoint: a resumed run goes on
    # with the same plan (steps, LR schedule) instead of planning again from a rate its evals distort
    _CLOCK = ("eval_seconds", "eval_count", "last_eval_time")

    def _save(self, opt, sched, state: dict, limit: int | None):
        state["clock"] = {**{k: getattr(self, k) for k in self._CLOCK}, "budget": self.budget or None,
                          "replanned": sorted(self._replanned), "plan_anchor": list(self._plan_anchor)}
        return save_checkpoint(self.out, self.model, opt, sched, state, self.dist, limit)

    def _restore_clock(self, state: dict, opt, sched):
        clock = state.get("clock") or {}
        for k in self._CLOCK:
            if k in clock:
                setattr(self, k, clock[k])
        if clock.get("budget") and self.cfg.time_budget_seconds == clock["budget"]["budget_s"]:
            self.budget = clock["budget"]
            self._replanned = set(clock.get("replanned", []))
            self._plan_anchor = tuple(clock.get("plan_anchor", (0, 0.0)))  # type: ignore[assignment]
            self.total_steps = int(self.budget["planned_steps"])
            return self._rescheduled(opt, sched, state["step"])   # the plan's LR schedule, at this step
        return sched

    def _sync_stop(self) -> None:
        """Under torchrun every rank stops at the same step (rank 0 decides dev-metric stops)."""
        if self.dist.world > 1:
            if self._global_sum(float(bool(self.stop_reason)), self.dist) > 0 and not self.stop_reason:
                self.stop_reason = "stopped on another rank"

    @property
    def select_metric(self) -> str | None:
        return self.cfg.dev_metrics[0] if self.cfg.dev_metrics else None

    def train_seconds(self) -> float:
        """Training wall time, this run plus the runs it resumed."""
        return self.seconds_before + time.perf_counter() - self.started

    # -- time budget ------------------------------------------------------------------------------------
    def _plan_budget(self, state: dict, opt, sched):
        """With ``time_budget``: after a short warm-up, plan the steps that fit (measured seconds per
        step; reserved: the evals still due and the final dev eval and save), rebuild the LR schedule
        for that many steps, and stop at the deadline whatever happens. The warm-up's rate includes
        one-off costs (first allocations, the longest batches), so the plan is made again at 10% and
        25% of the budget from the steady rate since the first plan, eval time left out."""
        budget = self.cfg.time_budget_seconds
        if not budget:
            return sched
        spent = self.train_seconds()
        reserve = self._reserve()
        stepping = spent - self.eval_seconds          # time spent in training steps only
        if not self.budget:
            warm = min(120.0, 0.05 * budget)
            if spent < warm or state["step"] < 3:
                return sched
            per_step = stepping / max(state["step"], 1)
            self.budget = {"budget_s": budget, "warmup_steps": state["step"], "plans": []}
            self._plan_anchor = (state["step"], stepping)
            return self._replan(state, opt, sched, per_step, spent, reserve)
        due = [f for f in (0.10, 0.25) if spent >= f * budget and f not in self._replanned]
        if due and state["step"] > self._plan_anchor[0] and not self.stop_reason:
            self._replanned.update(due)
            step0, stepping0 = self._plan_anchor
            per_step = (stepping - stepping0) / (state["step"] - step0)
            return self._replan(state, opt, sched, per_step, spent, reserve)
        if spent + reserve >= budget and not self.stop_reason:
            self.stop_reason = f"time budget: {spent:.0f} s spent, {reserve:.0f} s kept for the final eval and save"
            log.info("stopping at step %d: %s", state["step"], self.stop_reason)
        return sched

    def _replan(self, state: dict, opt, sched, per_step: float, spent: float, reserve: float):
        """Steps that fit what is left of the budget at ``per_step`` seconds, minus the evals due
        meanwhile (``eval_minutes``); the LR schedule continues at this step of the new plan."""
        budget = self.budget["budget_s"]
        left = budget - reserve - spent
        if self.cfg.eval_minutes:
            left -= math.floor(max(left, 0.0) / (60 * self.cfg.eval_minutes)) * self._eval_cost()
        planned = state["step"] + int(max(0.0, left) / max(per_step, 1e-9))
        limit = self.cfg.max_steps or math.ceil(self.cfg.num_train_epochs * self.steps_per_epoch)
        self.total_steps = max(state["step"] + 1, min(planned, limit))
        plan = {"at_step": state["step"], "at_s": round(spent, 1), "seconds_per_step": round(per_step, 3),
                "reserve_s": round(reserve, 1), "planned_steps": self.total_steps,
                "epochs_planned": round(self.total_steps / self.steps_per_epoch, 3)}
        self.budget["plans"].append(plan)
        self.budget.update({k: plan[k] for k in ("seconds_per_step", "reserve_s", "planned_steps", "epochs_planned")})
        log.info("time budget %.0f s: %.2f s/step at step %d -> %d steps planned (%.2f epochs)",
                 budget, per_step, state["step"], self.total_steps, plan["epochs_planned"])
        return self._rescheduled(opt, sched, state["step"])

    def _eval_cost(self) -> float:
        """Seconds one mid-run eval takes: the last one measured, else a guess."""
        if self.eval_count:
            return self.eval_seconds / self.eval_count
        return 60.0 if (self.dev or self.val_set) else 0.0

    def _reserve(self) -> float:
        """Seconds kept at the end of a time budget: the final eval (eval loss + dev metrics, as measured)
        and the final save."""
        save = min(30.0, 0.05 * (self.cfg.time_budget_seconds or 0.0))   # the final save and merge
        return self._eval_cost() + save

    def _eval_fits(self) -> bool:
        """A mid-run eval by time is skipped when it would push the final eval past the deadline."""
        budget = self.cfg.time_budget_seconds
        return not (budget and self.budget) or self.train_seconds() + self._eval_cost() + self._reserve() <= budget

    def _rescheduled(self, opt, sched, step: int):
        from transformers import get_scheduler

        for group in opt.param_groups:
            group["lr"] = group.get("initial_lr", self.cfg.learning_rate)
        new = get_scheduler(self.cfg.lr_scheduler_type, opt,
                            num_warmup_steps=int(self.cfg.warmup_ratio * self.total_steps),
                            num_training_steps=self.total_steps)
        for _ in range(step):   # the schedule now continues at this step of the planned run
            new.step()
        return new

    def _after_step(self, state, entry, window, tokens_run, started, bar, opt, sched, lr):
        cfg = self.cfg
        step, loss = state["step"], entry["loss"]
        rate = tokens_run / max(time.perf_counter() - started, 1e-9)
        if bar.total != self.total_steps:   # the time budget planned another number of steps
            bar.total = self.total_steps
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{rate:.0f}", lr=f"{lr:.2e}")
        entry.update(lr=lr, tokens_per_second=round(rate, 2))   # already in the history (see run)
        self._progress(entry)
        if step % cfg.logging_steps == 0 or step == 1:
            log.info("step %d/%d loss %.4f lr %.2e %.0f tok/s", step, self.total_steps, sum(window) / len(window),
                     lr, rate)
            window.clear()
        due = (cfg.eval_minutes is not None and self.train_seconds() - self.last_eval_time >= 60 * cfg.eval_minutes
               and self._eval_fits())
        if self.dist.world > 1 and cfg.eval_minutes is not None:
            due = self._global_sum(float(due), self.dist) > 0
        if ((cfg.eval_steps and step % cfg.eval_steps == 0) or due) and (self.val_set or self.dev):
            self._log_eval(state)
        due_by_time = cfg.save_minutes is not None and time.monotonic() - self.last_save >= 60 * cfg.save_minutes
        if self.dist.world > 1:   # every rank must agree (FSDP gathers the weights collectively)
            due_by_time = self._global_sum(float(due_by_time), self.dist) > 0
        if (cfg.save_steps and step % cfg.save_steps == 0) or due_by_time:
            self._save(opt, sched, state, cfg.save_total_limit)
            self.last_save = time.monotonic()

    def _progress(self, entry: dict) -> None:
        """Append to ``OUTPUT/progress.jsonl`` as training goes (what `ragtune ui` and anyone tailing the
        run read live; metrics.json is written at the end). One JSON object per line, flushed."""
        if not self.dist.main:
            return
        with open(self.out / PROGRESS_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({**entry, "time": round(time.time(), 3), "total_steps": self.total_steps}) + "\n")

    def _log_eval(self, state):
        """Eval loss (val split) and the dev metrics; tracks the best step and early stopping."""
        started = time.perf_counter()
        try:
            self._run_eval(state)
        finally:
            self.eval_seconds += time.perf_counter() - started
            self.eval_count += 1

    def _run_eval(self, state):
        self.last_eval_step = state["step"]
        self.last_eval_time = self.train_seconds()
        entry: dict[str, Any] = {"step": state["step"]}
        eval_loss = self.evaluate()
        if eval_loss is not None:
            entry["eval_loss"] = eval_loss
            log.info("step %d eval loss %.4f", state["step"], eval_loss)
        if self.dev is not None and self.dist.main:
            with self._ctx():   # fp32 masters beside frozen bf16 weights (full, freeze) need the autocast
                entry["dev"] = self.dev.run(self.model, self.tokenizer)
            log.info("step %d dev %s (%.0f s)", state["step"],
                     ", ".join(f"{k} {v:.4f}" for k, v in entry["dev"].items() if v is not None), self.dev.seconds)
            self._track_best(state, entry["dev"])
        if len(entry) > 1:
            self.history.append(entry)
            self._progress(entry)

    def _track_best(self, state, dev: dict) -> None:
        from . import dev as devmod

        value = devmod.select(dev, str(self.select_metric))
        if self.best is None or value > self.best[0]:
            self.best = (value, state["step"])
            self.best_dev = dict(dev)
            self.evals_since_best = 0
            state["best"], state["best_dev"] = list(self.best), dict(dev)
            if self.cfg.keep_best:
                self._save_best()
            return
        self.evals_since_best += 1
        patience = self.cfg.early_stopping_patience
        if patience and self.evals_since_best >= patience and not self.stop_reason:
            self.stop_reason = (f"early stopping: {self.select_metric} did not improve for {patience} evals "
                                f"(best {self.best[0]:.4f} at step {self.best[1]})")
            log.info("%s", self.stop_reason)

    def _save_best(self) -> None:
        from safetensors.torch import save_file

        from ...core.io import atomic_dir

        assert self.best is not None
        value, step = self.best
        weights = trainable_state(self.model, self.dist)
        with atomic_dir(self.out / "best") as tmp:
            save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / "trainable.safetensors"))
            (tmp / "best.json").write_text(json.dumps({"step": step, "selected_by": self.select_metric,
                                                       **self.best_dev}))

    def restore_best(self) -> None:
        """Put the best eval's weights back before the model is saved (``keep_best``)."""
        import torch
        from safetensors.torch import load_file

        path = self.out / "best" / "trainable.safetensors"
        if not (self.cfg.keep_best and self.best and path.exists()):
            return
        if self.history and self.best[1] == max(h["step"] for h in self.history):
            return
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in load_file(str(path)).items():
                params[name].copy_(tensor.to(params[name].dtype))
        log.info("keep_best: the saved model is step %d's (%s %.4f)", self.best[1], self.select_metric, self.best[0])


# -- outputs --------------------------------------------------------------------------------------------
def finish(cfg, method, model, tokenizer, model_dir: str, out: Path, metrics: dict,
           trained: dict | None) -> FinetuneResult:
    from ...core.io import atomic_write_json
    from ...models.source import FINETUNE_MANIFEST
    from .export import save_adapter, save_merged
    from .plots import plot_loss

    adapter = save_adapter(model, tokenizer, out / "adapter") if method.trains_adapter else None
    merged = save_merged(tokenizer, model_dir, out / "merged", adapter, trained) if cfg.merge else None
    metrics = dict(metrics)
    atomic_write_json(out / "metrics.json", metrics)
    plot_loss(metrics["history"], out / "loss.png")
    from ...core.prompt import write_recorded_prompt
    from ...data.squad import read_template_sidecar

    instruction, lang = read_template_sidecar(cfg.train)
    write_recorded_prompt(out, tokenizer, cfg.prompt, instruction, lang)
    atomic_write_json(out / FINETUNE_MANIFEST, {
        "base_model": cfg.base, "base_model_path": model_dir, "method": method.name,
        "adapter": "adapter" if adapter else None, "merged": "merged" if merged else None,
        "prompt": cfg.prompt.model_dump(mode="json"), "cutoff_len": cfg.cutoff_len})
    log.info("done: %s (final loss %s, eval loss %s)", out, metrics.get("final_loss"), metrics.get("eval_loss"))
    return FinetuneResult(out, metrics, adapter, merged)
