"""Deterministic data order and batching (the same order after ``--resume``, on 1 or N processes).

The order of epoch ``e`` is a function of ``(seed, e, global batch size)`` only, so a resumed run
replays it exactly and a 2-process DDP run sees the same global batches as a 1-process run with
gradient accumulation.
"""
from __future__ import annotations

from collections.abc import Sequence

MEGA_BATCHES = 50  # length grouping sorts within windows of 50 global batches (HF Trainer's choice)


def epoch_batches(lengths: Sequence[int], global_batch: int, seed: int, epoch: int,
                  group_by_length: bool, drop_last: bool = False) -> list[list[int]]:
    import torch

    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    n = len(lengths)
    order = torch.randperm(n, generator=g).tolist()
    if group_by_length:
        window = global_batch * MEGA_BATCHES
        order = [j for i in range(0, n, window)
                 for j in sorted(order[i:i + window], key=lambda k: -lengths[k])]
    batches = [order[i:i + global_batch] for i in range(0, n, global_batch)]
    if drop_last and batches and len(batches[-1]) < global_batch:
        batches.pop()
    if group_by_length:
        # the batch with the longest sample of the whole epoch first (an out-of-memory shows at step 1,
        # not after an hour); the first window's longest is not it once there are several windows
        first = max(range(len(batches)), key=lambda k: (max(lengths[i] for i in batches[k]), -k))
        head, rest = [batches[first]], batches[:first] + batches[first + 1:]
        perm = torch.randperm(len(rest), generator=g).tolist()
        batches = head + [rest[i] for i in perm]
    return batches


def micro_batches(batch: Sequence[int], per_device: int, accum: int, world: int, rank: int) -> list[list[int]]:
    """This rank's micro-batches of one global batch (accumulation step j, rank r)."""
    out = []
    span = per_device * world
    for j in range(accum):
        micro = batch[j * span:(j + 1) * span]
        mine = list(micro[rank * per_device:(rank + 1) * per_device])
        if mine:
            out.append(mine)
    return out


def split_by_attention_area(micro: Sequence[int], lengths: Sequence[int], max_area: int) -> list[list[int]]:
    """``micro`` cut, in order, into chunks whose padded attention area (rows x longest row ^ 2)
    stays within ``max_area``. Packed sequences are up to 2 x cutoff_len long, and with length
    grouping four of the longest land in one batch: attention memory grows with rows x length ^ 2,
    so such a batch needs 4x what any unpacked one does (it killed a 58-min CMRC run at step 307
    with 24 GB RSS). The trainer divides every chunk's loss by the whole batch's label count, so
    the chunks sum to the same gradient."""
    chunks: list[list[int]] = []
    for i in micro:
        if chunks:
            rows = chunks[-1] + [i]
            if len(rows) * max(lengths[j] for j in rows) ** 2 <= max_area:
                chunks[-1] = rows
                continue
        chunks.append([i])
    return chunks


def collate(samples, pad_id: int):
    import torch

    from .data import IGNORE

    width = max(len(s) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s)
        ids[i, :n] = torch.tensor(s.input_ids)
        labels[i, :n] = torch.tensor(s.labels)
        mask[i, :n] = 1
    return ids, mask, labels


def labelled_tokens(sample) -> int:
    """Positions that contribute to the loss (next-token labels)."""
    from .data import IGNORE

    return sum(1 for lab in sample.labels[1:] if lab != IGNORE)
