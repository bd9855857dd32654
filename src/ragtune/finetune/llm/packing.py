"""Shared-context training: records that share a prompt prefix train as one sequence.

CMRC has ~4 questions per passage, and data made from documents has several questions per chunk:
the passage (hundreds of tokens) is the same in each record, only the question and the answer
differ. A *pack* holds the shared prefix once, then each record's remaining tokens (its *branch*):

    [prefix][branch 1][branch 2]...      positions: prefix 0..P-1, every branch P..P+len-1 again
    mask: a prefix token sees the prefix causally; a branch token sees the prefix and its own branch

Every branch token sees exactly the tokens, at exactly the positions, that it sees when its record
trains alone, so the loss and the gradients are those of the records trained separately (a test
compares them in fp32), at a fraction of the tokens. Sliding-window layers (Gemma 3) get their own
mask with the window applied to position distances. Models whose decoder does not take these masks
are detected by a numeric check on the first pack and train unpacked (logged).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ...core.log import get_logger
from ...core.prompt import common_prefix as _common_prefix
from .data import IGNORE, Sample
from .data import prompt_len as _prompt_len

log = get_logger(__name__)


@dataclass
class Pack:
    """One training sequence built from one or more records (``members``: their sample indices)."""
    input_ids: list[int]
    labels: list[int]
    positions: list[int]
    segments: list[int]            # 0 = shared prefix, k = branch k (1-based)
    members: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


def single(sample: Sample, index: int) -> Pack:
    n = len(sample.input_ids)
    return Pack(list(sample.input_ids), list(sample.labels), list(range(n)), [1] * n, [index])


def build_packs(samples: Sequence[Sample], *, min_prefix: int = 32, max_len: int = 2048,
                max_members: int = 16) -> list[Pack]:
    """Group samples whose prompts share at least ``min_prefix`` tokens into packs of at most
    ``max_len`` tokens. The shared prefix always stops before each member's last prompt token, so
    every branch starts with an unlabelled token and the prefix's last token predicts nothing."""
    order = sorted(range(len(samples)), key=lambda i: samples[i].input_ids[:_prompt_len(samples[i])])
    packs: list[Pack] = []
    group: list[int] = []
    prefix = 0

    def flush() -> None:
        if len(group) == 1 or prefix < min_prefix:
            packs.extend(single(samples[i], i) for i in group)
        else:
            packs.append(_pack(samples, group, prefix))

    for i in order:
        limit = _prompt_len(samples[i]) - 1
        if group:
            shared = min(prefix, _common_prefix(samples[group[0]].input_ids, samples[i].input_ids), limit)
            size = shared + sum(len(samples[j]) - shared for j in group) + len(samples[i]) - shared
            if shared >= min_prefix and size <= max_len and len(group) < max_members:
                group.append(i)
                prefix = shared
                continue
            flush()
        group, prefix = [i], limit
    if group:
        flush()
    return packs


def _pack(samples: Sequence[Sample], members: list[int], prefix: int) -> Pack:
    first = samples[members[0]]
    ids, labels = list(first.input_ids[:prefix]), [IGNORE] * prefix
    positions, segments = list(range(prefix)), [0] * prefix
    for k, i in enumerate(members, start=1):
        s = samples[i]
        ids += s.input_ids[prefix:]
        labels += s.labels[prefix:]
        positions += list(range(prefix, len(s)))
        segments += [k] * (len(s) - prefix)
    return Pack(ids, labels, positions, segments, list(members))


# -- batches --------------------------------------------------------------------------------------------------
def collate_packs(packs: Sequence[Pack], pad_id: int, dtype: Any, sliding_window: int | None):
    """(input_ids, masks, labels, position_ids). ``masks``: an additive 4D mask, or a dict
    {"full_attention", "sliding_attention"} of them for models with sliding-window layers."""
    import torch

    width = max(len(p) for p in packs)
    b = len(packs)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    labels = torch.full((b, width), IGNORE, dtype=torch.long)
    pos = torch.zeros((b, width), dtype=torch.long)
    seg = torch.full((b, width), -1, dtype=torch.long)         # -1 = padding
    for r, p in enumerate(packs):
        n = len(p)
        ids[r, :n] = torch.tensor(p.input_ids)
        labels[r, :n] = torch.tensor(p.labels)
        pos[r, :n] = torch.tensor(p.positions)
        seg[r, :n] = torch.tensor(p.segments)
    q_seg, k_seg = seg[:, :, None], seg[:, None, :]
    q_pos, k_pos = pos[:, :, None], pos[:, None, :]
    index = torch.arange(width)
    causal = index[None, :, None] >= index[None, None, :]
    visible = causal & (k_seg >= 0) & ((k_seg == 0) | (k_seg == q_seg))
    visible |= torch.eye(width, dtype=torch.bool)[None]         # padding rows attend to themselves (no NaN)
    masks = {"full_attention": _additive(visible, dtype)}
    if sliding_window:
        masks["sliding_attention"] = _additive(visible & (q_pos - k_pos < sliding_window), dtype)
        return ids, masks, labels, pos
    return ids, masks["full_attention"], labels, pos


def _additive(allowed, dtype):
    import torch

    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]                                        # (batch, 1, q, k)


def sliding_window_of(model: Any) -> int | None:
    """The sliding window of a model with sliding-window layers (Gemma 2/3, Mistral ...), else None."""
    cfg: Any = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    types = getattr(cfg, "layer_types", None) or []
    window = getattr(cfg, "sliding_window", None)
    return int(window) if window and "sliding_attention" in types else None


def labelled_tokens(pack: Pack) -> int:
    return sum(1 for lab in pack.labels[1:] if lab != IGNORE)


def stats(packs: Sequence[Pack], samples: Sequence[Sample]) -> dict[str, float]:
    packed = sum(len(p) for p in packs)
    plain = sum(len(s) for s in samples)
    return {"records": len(samples), "sequences": len(packs), "tokens": packed, "unpacked_tokens": plain,
            "token_ratio": round(plain / max(packed, 1), 3),
            "records_per_sequence": round(len(samples) / max(len(packs), 1), 3)}
