"""Extractive decoding for span tasks (reading comprehension: the answer is copied from the passage).

Every decode step of a 262k-vocabulary model projects the hidden state onto all 262k rows of the
output layer: for gemma-3-270m that is more multiply-adds than the rest of the model. When the answer
must come from the prompt's context, only the context's tokens (plus EOS and the stop markers) can be
right, so:

- ``vocab`` mode computes the output layer over those few hundred rows only (the other logits are
  -inf), which is both faster and a constraint on the vocabulary;
- ``span`` mode also keeps the answer a substring of the context: a token is allowed only if the
  text generated so far plus that token's text still occurs in the context.

The allowed tokens of a row are the tokens of its context tokenized whole, plus every single
character of it tokenized alone, so any substring can be spelled even where the context's own
tokenization merges it with its neighbours.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MODES = ("off", "vocab", "span")


@dataclass
class Constraint:
    """What one request may generate: ``allowed`` token ids; with ``context``, only spans of it."""
    allowed: list[int]
    context: str | None = None                   # set in "span" mode
    texts: dict[int, str] = field(default_factory=dict, repr=False)   # token id -> its text (span mode)


def build_constraint(tokenizer: Any, context: str, mode: str, eos_ids: set[int],
                     stop: Sequence[str] = ()) -> Constraint | None:
    if mode == "off":
        return None
    ids = set(tokenizer(context, add_special_tokens=False)["input_ids"])
    for ch in set(context):
        ids.update(tokenizer(ch, add_special_tokens=False)["input_ids"])
    for s in stop:
        ids.update(tokenizer(s, add_special_tokens=False)["input_ids"])
    ids |= set(eos_ids)
    allowed = sorted(ids)
    if mode != "span":
        return Constraint(allowed)
    texts = {t: tokenizer.decode([t], skip_special_tokens=True) for t in allowed if t not in eos_ids}
    return Constraint(allowed, context, texts)


class RestrictedHead:
    """Swaps a model's output layer for one computed only over each row's allowed ids (others -inf)
    while the block runs: ``with RestrictedHead(model, constraints): <decode>``; the decode loop calls :meth:`select` as rows leave."""

    def __init__(self, model: Any, constraints: Sequence[Constraint]):
        import torch

        self.head = model.get_output_embeddings()
        width = max(len(c.allowed) for c in constraints)
        # rows are padded with their own first id: duplicates then write the same logit
        allowed = torch.tensor([c.allowed + [c.allowed[0]] * (width - len(c.allowed)) for c in constraints])
        self.batch_allowed = self.allowed = allowed.to(self.head.weight.device)

    def select(self, rows: Any) -> None:
        """Keep the allowed ids of the batch rows ``rows`` (the decode loop drops finished rows)."""
        self.allowed = self.batch_allowed[rows]

    def forward(self, hidden):
        import torch

        weight = self.head.weight
        rows = weight[self.allowed]                                     # (batch, k, hidden)
        picked = torch.einsum("bth,bkh->btk", hidden.to(rows.dtype), rows)
        if getattr(self.head, "bias", None) is not None:
            picked = picked + self.head.bias[self.allowed][:, None, :]
        out = picked.new_full((*hidden.shape[:2], weight.shape[0]), float("-inf"))
        out.scatter_(-1, self.allowed[:, None, :].expand(-1, hidden.shape[1], -1), picked)
        return out

    def __enter__(self):
        self._saved = self.head.__dict__.get("forward")
        self.head.forward = self.forward
        return self

    def __exit__(self, *exc):
        if self._saved is None:
            del self.head.forward
        else:
            self.head.forward = self._saved


class SpanProcessor:
    """A logits processor for ``span`` mode: next tokens must keep the answer inside the context
    (and the allowed set, again after any logit soft-capping, which turns -inf into a finite value)."""

    def __init__(self, constraints: Sequence[Constraint | None], prompt_len: int, tokenizer: Any,
                 eos_ids: set[int]):
        self.constraints, self.prompt_len, self.tok, self.eos = list(constraints), prompt_len, tokenizer, eos_ids

    def __call__(self, input_ids, scores):
        import torch

        mask = torch.zeros_like(scores, dtype=torch.bool)
        new = input_ids[:, self.prompt_len:].tolist()
        for row, c in enumerate(self.constraints):
            if c is None:
                mask[row] = True
                continue
            if c.context is None:
                mask[row, c.allowed] = True
                continue
            so_far = self.tok.decode(new[row], skip_special_tokens=True)
            ok = [t for t, text in c.texts.items() if (so_far + text) and (so_far + text) in c.context]
            if so_far.strip():
                ok += [t for t in c.allowed if t in self.eos]
            mask[row, ok or c.allowed] = True
        return scores.masked_fill(~mask, float("-inf"))
