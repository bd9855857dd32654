"""ragtune's own contrastive trainer for sentence-transformers models (the default ``trainer``).

Why not SentenceTransformerTrainer: profiling one step of all-MiniLM-L6-v2 on financial QA
(queries ~19 tokens, passages ~68 on average but up to 1000) showed the time going to padding.
The library pads a whole column to its longest text, so one 256-token passage makes every passage
of the batch 256 tokens, and attention grows with the square of that. This loop keeps the
library's tokenisation, modules and saved format, and changes only how a batch is computed:

- each side is cut at its own limit (``query_max_len`` / ``passage_max_len``), not one shared one;
- the texts of a batch are sorted by length and encoded in micro-batches padded to their own
  longest text; the embeddings are put back in order and the loss sees the whole batch, so the
  in-batch negatives and the gradient are those of the full batch (only padding is saved);
- token lengths are computed once for all texts (the sort key), not every epoch.

The loss is MultipleNegativesRankingLoss (InfoNCE over the batch's positives and hard negatives,
scale = 1/temperature), optionally Matryoshka (the same loss on leading prefixes of the vector).
It also evaluates a held-out slice every ``eval_steps``, keeps the best weights by ``eval_metric``,
re-plans the step count to fit ``time_budget_minutes``, and saves the weights on Ctrl-C / SIGTERM.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...core.errors import interrupts_deferred
from ...core.log import get_logger
from .config import EmbedFinetuneConfig

log = get_logger(__name__)

# Padded tokens per micro-batch: measured on all-MiniLM-L6-v2 (64 financial passages, fwd+bwd):
# one padded batch 6.7 s, 4096 tokens 3.6 s, 1024 tokens 2.8 s, 512 tokens 2.5-2.8 s (noise). Large
# enough that the matmuls stay efficient, small enough that
# a batch of similar-length texts is cut into several pieces.
MICRO_BATCH_TOKENS = 1024


@dataclass
class TrainRows:
    """The training rows as indices into one list of unique texts (tokenised lengths cached)."""

    texts: list[str]
    lengths: list[int]
    queries: list[int]
    positives: list[int]
    negatives: list[list[int]]

    def __len__(self) -> int:
        return len(self.queries)


@dataclass
class History:
    loss: list[tuple[int, float]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    best_step: int | None = None
    best_value: float | None = None
    plans: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0


def token_lengths(model: Any, texts: Sequence[str], max_len: int, prompt: str = "") -> list[int]:
    """Tokens per text (specials and prompt included, capped at ``max_len``): the sort key."""
    tok = model.tokenizer
    specials = tok.num_special_tokens_to_add(pair=False)
    extra = len(tok(prompt, add_special_tokens=False)["input_ids"]) if prompt else 0
    out: list[int] = []
    for start in range(0, len(texts), 1024):
        ids = tok(list(texts[start:start + 1024]), add_special_tokens=False)["input_ids"]
        out.extend(min(max_len, len(x) + specials + extra) for x in ids)
    return out


def build_rows(model: Any, cols: dict[str, list[str]], cfg: EmbedFinetuneConfig, instruction: str) -> TrainRows:
    """``cols`` (query, pos, neg_0..) -> rows of text ids; queries and passages are separate texts
    even when equal, because they are encoded with different prompts and limits."""
    n_neg = sum(1 for k in cols if k.startswith("neg_"))
    q_ids: dict[str, int] = {}
    p_ids: dict[str, int] = {}
    for q in cols["query"]:
        q_ids.setdefault(q, len(q_ids))
    for key in ["pos", *[f"neg_{j}" for j in range(n_neg)]]:
        for p in cols[key]:
            p_ids.setdefault(p, len(p_ids))
    q_texts, p_texts = list(q_ids), list(p_ids)
    offset = len(q_texts)
    lengths = (token_lengths(model, q_texts, cfg.query_max_len, instruction)
               + token_lengths(model, p_texts, cfg.passage_max_len))
    return TrainRows(
        texts=q_texts + p_texts, lengths=lengths,
        queries=[q_ids[q] for q in cols["query"]],
        positives=[offset + p_ids[p] for p in cols["pos"]],
        negatives=[[offset + p_ids[cols[f"neg_{j}"][i]] for j in range(n_neg)] for i in range(len(cols["query"]))],
    )


def batches_without_duplicates(rows: TrainRows, batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of row batches in which no text repeats (as sentence-transformers' NO_DUPLICATES:
    a repeated passage would be a false in-batch negative). A row that clashes waits for a later
    batch; the last batch may be smaller."""
    order = list(range(len(rows)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    waiting = order
    while waiting:
        batch: list[int] = []
        seen: set[int] = set()
        later: list[int] = []
        for r in waiting:
            texts = {rows.queries[r], rows.positives[r], *rows.negatives[r]}
            if len(batch) < batch_size and not (texts & seen):
                batch.append(r)
                seen |= texts
            else:
                later.append(r)
        batches.append(batch)
        waiting = later
    return batches


def micro_batches(text_ids: Sequence[int], lengths: Sequence[int], budget: int | None = None) -> list[list[int]]:
    """Positions of ``text_ids`` grouped by length so each group pads to at most ``budget`` tokens."""
    budget = budget or MICRO_BATCH_TOKENS
    order = sorted(range(len(text_ids)), key=lambda i: lengths[text_ids[i]])
    groups: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = lengths[text_ids[i]]   # sorted ascending: this one is the longest so far
        if cur and longest * (len(cur) + 1) > budget:
            groups.append(cur)
            cur = []
        cur.append(i)
    if cur:
        groups.append(cur)
    return groups


class Encoder:
    """Encodes lists of texts with a sentence-transformers model, one side's limit and prompt."""

    def __init__(self, model: Any, query_max_len: int, passage_max_len: int, instruction: str):
        self.model = model
        self.query_max_len = query_max_len
        self.passage_max_len = passage_max_len
        self.instruction = instruction or None

    def _features(self, texts: list[str], query: bool) -> dict[str, Any]:
        model = self.model
        model.max_seq_length = self.query_max_len if query else self.passage_max_len
        feats = model.preprocess(texts, prompt=self.instruction if query else None)
        device = model.device
        return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in feats.items()}

    def encode(self, texts: Sequence[str], lengths: Sequence[int], query: bool):
        """Embeddings (rows in the order of ``texts``) computed in length-sorted micro-batches."""
        import torch

        parts: list[Any] = [None] * len(texts)
        for group in micro_batches(list(range(len(texts))), lengths):
            emb = self.model(self._features([texts[i] for i in group], query))["sentence_embedding"]
            for j, i in enumerate(group):
                parts[i] = emb[j]
        return torch.stack(parts)


def contrastive_loss(q, p, scale: float, dims: Sequence[int] | None):
    """InfoNCE with query i's positive at column i of ``p`` (then the hard negatives); with ``dims``,
    the mean of the same loss on each leading prefix of the vectors (Matryoshka)."""
    import torch
    import torch.nn.functional as F

    labels = torch.arange(q.shape[0], device=q.device)
    losses = []
    for d in dims or [q.shape[1]]:
        qd, pd = F.normalize(q[:, :d], dim=-1), F.normalize(p[:, :d], dim=-1)
        losses.append(F.cross_entropy(qd @ pd.T * scale, labels))
    return torch.stack(losses).mean()


def linear_schedule(warmup: float, total: Callable[[], int]) -> Callable[[int], float]:
    """Linear warm-up then linear decay to 0 at ``total()`` steps; ``total`` is read at every step
    so a re-plan (time budget) moves the end of the decay."""
    def factor(step: int) -> float:
        n = max(1, total())
        w = max(1, int(warmup * n)) if warmup > 0 else 0
        if step < w:
            return (step + 1) / w
        return max(0.0, (n - step) / max(1, n - w))
    return factor


def train_ragtune(cfg: EmbedFinetuneConfig, model: Any, cols: dict[str, list[str]], instruction: str,
                  evaluate: Callable[[], dict[str, Any]] | None) -> History:
    """Train ``model`` in place on ``cols``; ``evaluate()`` scores the current weights on the
    held-out slice (None: no evaluation during training)."""
    import torch

    torch.manual_seed(cfg.seed)
    rows = build_rows(model, cols, cfg, instruction)
    encoder = Encoder(model, cfg.query_max_len, cfg.passage_max_len, instruction)
    rng = random.Random(cfg.seed)
    epochs = math.ceil(cfg.num_train_epochs)
    plan = [batches_without_duplicates(rows, cfg.per_device_train_batch_size, rng) for _ in range(epochs)]
    per_epoch = len(plan[0])
    total_steps = max(1, round(per_epoch * cfg.num_train_epochs))
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    steps = {"total": total_steps}
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_schedule(cfg.warmup_ratio, lambda: steps["total"]))
    hist = History()
    best_state: dict[str, Any] | None = None
    scale = 1.0 / cfg.temperature
    dims = sorted(set(cfg.matryoshka_dims), reverse=True) if cfg.matryoshka_dims else None
    log.info("ragtune trainer: %d rows (%d hard negatives each), batch %d, %d steps (%d per epoch)",
             len(rows), len(rows.negatives[0]) if len(rows) else 0, cfg.per_device_train_batch_size,
             total_steps, per_epoch)

    def run_eval(step: int) -> None:
        nonlocal best_state
        assert evaluate is not None
        model.eval()
        with torch.no_grad():
            metrics = evaluate()
        model.train(cfg.dropout)
        value = float(metrics[cfg.eval_metric])
        hist.evals.append({"step": step, **metrics})
        better = hist.best_value is None or value > hist.best_value
        log.info("step %d: dev %s %.4f%s", step, cfg.eval_metric, value, " (best)" if better else "")
        if better:
            hist.best_step, hist.best_value = step, value
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    started = time.perf_counter()
    eval_seconds = 0.0
    step = 0
    model.train(cfg.dropout)   # for these encoders train mode only switches dropout on
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, desc="embed fine-tune", unit="step")
    try:
        for batch in (b for epoch in plan for b in epoch):
            if step >= steps["total"]:
                break
            q_ids = [rows.queries[r] for r in batch]
            p_ids = [rows.positives[r] for r in batch] + [n for r in batch for n in rows.negatives[r]]
            q = encoder.encode([rows.texts[i] for i in q_ids], [rows.lengths[i] for i in q_ids], query=True)
            p = encoder.encode([rows.texts[i] for i in p_ids], [rows.lengths[i] for i in p_ids], query=False)
            loss = contrastive_loss(q, p, scale, dims)
            loss.backward()
            with interrupts_deferred():   # Ctrl-C saves whole steps only
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
            bar.update(1)
            if step % cfg.logging_steps == 0 or step == 1:
                hist.loss.append((step, round(float(loss.detach()), 5)))
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            _replan(cfg, step, steps, started, eval_seconds, hist, bar)
            if evaluate is not None and cfg.eval_steps and step % cfg.eval_steps == 0 and step < steps["total"]:
                t0 = time.perf_counter()
                run_eval(step)
                eval_seconds += time.perf_counter() - t0
    finally:
        bar.close()
        model.eval()
    if evaluate is not None and (not hist.evals or hist.evals[-1]["step"] != step):
        run_eval(step)
    if best_state is not None and hist.best_step != step:
        log.info("keeping the weights of step %d (best dev %s %.4f), not those of the last step %d",
                 hist.best_step, cfg.eval_metric, hist.best_value, step)
        model.load_state_dict(best_state)
    hist.steps = step
    hist.train_seconds = round(time.perf_counter() - started - eval_seconds, 1)
    hist.eval_seconds = round(eval_seconds, 1)
    return hist


def _replan(cfg: EmbedFinetuneConfig, step: int, steps: dict[str, int], started: float, eval_seconds: float,
            hist: History, bar: Any) -> None:
    """With a time budget: after 10 steps and at 25% and 50% of the budget, set the step count from the
    measured rate so the run (evaluations included) ends inside the budget, and the learning rate
    decays to 0 at the new end instead of being cut off mid-schedule."""
    if not cfg.time_budget_minutes:
        return
    elapsed = time.perf_counter() - started
    budget = cfg.time_budget_minutes * 60
    first = step == 10 and not hist.plans
    later = len(hist.plans) in (1, 2) and elapsed >= (0.25 if len(hist.plans) == 1 else 0.5) * budget
    if not (first or later):
        return
    train_rate = (elapsed - eval_seconds) / step
    n_evals_left = (steps["total"] - step) // cfg.eval_steps if cfg.eval_steps else 0
    eval_cost = eval_seconds / max(1, len(hist.evals)) if hist.evals else 0.0
    reserve = eval_cost * (n_evals_left + 1)
    fit = step + int(max(0.0, budget - elapsed - reserve) / train_rate)
    new_total = max(step + 1, min(steps["total"], fit))
    hist.plans.append({"at_step": step, "seconds_per_step": round(train_rate, 3), "planned_steps": new_total})
    if new_total != steps["total"]:
        log.info("time budget %.0f min: %.2f s/step -> %d steps (was %d)", cfg.time_budget_minutes,
                 train_rate, new_total, steps["total"])
        steps["total"] = new_total
        bar.total = new_total
