"""Causal-LM loss that applies the output projection (lm_head) only where there are labels.

Hugging Face models compute logits for every position (``seq x vocab``; for Gemma's 262k vocab that
is ~60% of the FLOPs of a step) and then mask most of them away in the loss. For instruction data the
labelled (answer) positions are a small fraction, so we take the decoder's hidden states, gather the
positions whose *next* token is labelled, and project only those. Same loss, same gradients
(tests/finetune/test_loss.py proves equality against the plain full-logits masked CE).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import IGNORE


def causal_lm_parts(model):
    """(decoder, lm_head, softcap) of a *ForCausalLM, unwrapping PEFT."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = inner.get_decoder()
    head = inner.get_output_embeddings()
    softcap = getattr(inner.config, "final_logit_softcapping", None)
    return decoder, head, softcap


def answer_only_loss_sum(model, input_ids, attention_mask, labels, position_ids=None) -> tuple[torch.Tensor, int]:
    """Summed next-token CE over labelled positions, and how many there were. ``attention_mask``:
    a 2D padding mask, or the 4D masks (a dict per layer type) of packed sequences with their
    ``position_ids`` (see packing.py)."""
    decoder, head, softcap = causal_lm_parts(model)
    kwargs = {"position_ids": position_ids} if position_ids is not None else {}
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    picked = hidden[:, :-1][keep]                      # (n_labelled, hidden)
    logits = head(picked).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, targets[keep], reduction="sum"), int(keep.sum())


def full_logits_loss_sum(model, input_ids, attention_mask, labels) -> tuple[torch.Tensor, int]:
    """The reference: every position's logits, then masked CE (what HF Trainer/TRL compute)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    shift_logits, targets = logits[:, :-1], labels[:, 1:]
    loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), targets.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")
    return loss, int((targets != IGNORE).sum())


class LossModule(torch.nn.Module):
    """Wraps the model so DDP sees one forward that returns the loss (its gradient hooks need the
    forward to go through the DDP wrapper)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, labels, position_ids=None):
        return answer_only_loss_sum(self.model, input_ids, attention_mask, labels, position_ids)
