"""Training data for the LLM trainer: the conversations (read and validated by :mod:`ragtune.data`,
the same reader and validator as ``ragtune data validate``), rendered with the shared prompt builder,
tokenized.

Tokenized samples are cached on disk under ``$RAGTUNE_HOME/cache/tokenized/<key>.json``; the key
hashes the data file, the tokenizer files, the prompt config and the cutoff, so any change retokenizes.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...core.errors import DataError
from ...core.log import get_logger
from ...core.prompt import common_prefix

log = get_logger(__name__)
IGNORE = -100
CACHE_VERSION = "1"  # bump when the tokenization logic changes


# -- reading: the one loader of ragtune.data ---------------------------------------------------------------
def load_conversations(path: str | os.PathLike, max_samples: int | None = None, with_total: bool = False):
    from ...data.validate import load_conversations as load

    return load(path, max_samples, with_total)


def usage_message(used: int, total: int, path, max_samples: int | None) -> str:
    cut = f" (max_samples={max_samples})" if used < total else ""
    return f"training on {used} of {total} samples in {path}{cut}"


# -- tokenizing -------------------------------------------------------------------------------------
@dataclass
class Sample:
    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenize_conversation(tokenizer, messages, prompt_cfg, cutoff_len: int, *, file: str = "",
                          record: int = 0) -> Sample:
    """Render with :func:`ragtune.core.prompt.render_turns` (the serving path uses the same function) and
    label only trainable (assistant) segments."""
    from ...core.prompt import bos_prefix, render_turns

    segments = render_turns(tokenizer, messages, prompt_cfg)
    full_text = "".join(t for t, _ in segments)
    ids: list[int] = [tokenizer.bos_token_id] if bos_prefix(tokenizer, full_text) else []
    labels: list[int] = [IGNORE] * len(ids)
    for text, trainable in segments:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if trainable else [IGNORE] * len(piece)
    first = next((i for i, lab in enumerate(labels) if lab != IGNORE), None)
    if first is None:
        raise DataError("no answer tokens after rendering", file=file, record=record)
    if first >= cutoff_len:
        raise DataError(f"the prompt alone is {first} tokens, longer than cutoff_len={cutoff_len}; "
                        "the answer would be cut away entirely", file=file, record=record,
                        hint=f"raise cutoff_len above {first} or shorten the sample")
    return Sample(ids[:cutoff_len], labels[:cutoff_len])


def tokenizer_fingerprint(tokenizer_dir: str | os.PathLike) -> str:
    h = hashlib.sha256()
    for name in sorted(os.listdir(tokenizer_dir)):
        if name.startswith("tokenizer") or name in ("special_tokens_map.json", "chat_template.jinja",
                                                    "vocab.json", "merges.txt"):
            h.update(name.encode())
            h.update(Path(tokenizer_dir, name).read_bytes())
    return h.hexdigest()


def cache_key(data_path, tokenizer_dir, prompt_cfg, cutoff_len: int, max_samples) -> str:
    from ...data.readers import require_file

    h = hashlib.sha256()
    h.update(CACHE_VERSION.encode())
    h.update(require_file(data_path, "training file").read_bytes())
    h.update(tokenizer_fingerprint(tokenizer_dir).encode())
    h.update(repr((prompt_cfg, cutoff_len, max_samples)).encode())
    return h.hexdigest()[:32]


def tokenized_dataset(data_path, tokenizer, tokenizer_dir, prompt_cfg, cutoff_len: int,
                      max_samples: int | None = None, use_cache: bool = True) -> tuple[list[Sample], int]:
    """(samples, number of records in the file)."""
    from ...core.io import atomic_write_json
    from ...core.paths import ragtune_home

    key = cache_key(data_path, tokenizer_dir, prompt_cfg, cutoff_len, max_samples)
    cache = ragtune_home() / "cache" / "tokenized" / f"{key}.json"
    if use_cache and cache.exists():
        cached = json.loads(cache.read_text())
        log.info("tokenized data from cache %s", cache)
        return [Sample(r[0], r[1]) for r in cached["samples"]], cached["total"]
    convs, total = load_conversations(data_path, max_samples, with_total=True)
    samples = [tokenize_conversation(tokenizer, c, prompt_cfg, cutoff_len, file=str(data_path), record=i)
               for i, c in enumerate(tqdm_if_long(convs))]
    if use_cache:
        atomic_write_json(cache, {"total": total, "samples": [[s.input_ids, s.labels] for s in samples]},
                          indent=None)
    return samples, total


def tqdm_if_long(items):
    from tqdm.auto import tqdm

    return tqdm(items, desc="tokenize", unit="sample", disable=len(items) < 2000)


def prompt_len(sample: Sample) -> int:
    """Tokens before the first labelled one."""
    return next((i for i, lab in enumerate(sample.labels) if lab != IGNORE), len(sample.labels))


def prompt_groups(samples: Sequence[Sample], min_prefix: int = 32) -> list[int]:
    """A group id per sample: records whose prompts share at least ``min_prefix`` tokens beyond what
    every prompt shares (the system prompt and the template) belong together, i.e. one passage and
    all its questions. Sorting the prompts puts a group's records next to each other."""
    prompts = [s.input_ids[:prompt_len(s)] for s in samples]
    order = sorted(range(len(samples)), key=lambda i: prompts[i])
    groups = [0] * len(samples)
    if not order:
        return groups
    template = common_prefix(prompts[order[0]], prompts[order[-1]])  # the LCP of a sorted list
    group = 0
    for prev, i in zip(order, order[1:]):
        if common_prefix(prompts[prev], prompts[i]) < template + min_prefix:
            group += 1
        groups[i] = group
    return groups


def validation_indices(n: int, val_size: float, seed: int, groups: Sequence[int] | None = None) -> list[int]:
    """Deterministic random held-out records: ``val_size`` < 1 is a fraction, >= 1 a count.

    With ``groups`` (:func:`prompt_groups`) whole groups are held out: each drawn record brings its
    group, until at least ``val_size`` records are out. A passage is then either trained on or held
    out, never both, so the eval loss and the dev metrics measure unseen passages (on CMRC2018, dev
    exact on held-out questions of trained passages read 48% while the test read 24%). With
    singleton groups the records drawn are those of the plain record split."""
    import random

    if not val_size:
        return []
    n_val = int(val_size) if val_size >= 1 else max(1, round(n * val_size))
    if n_val >= n:
        raise DataError(f"val_size={val_size} leaves no training samples out of {n}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    if groups is None:
        return sorted(order[:n_val])
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    held: list[int] = []
    taken: set[int] = set()
    for i in order:
        if len(held) >= n_val:
            break
        if groups[i] not in taken:
            taken.add(groups[i])
            held += members[groups[i]]
    if len(held) >= n:
        raise DataError(f"val_size={val_size} holds out every prompt group of {n} samples",
                        hint="lower val_size, or set val_split: record")
    return sorted(held)


def held_out_indices(samples: Sequence[Sample], val_size: float, seed: int, val_split: str = "prompt_group",
                     min_prefix: int = 32) -> list[int]:
    """The validation records of ``val_split``: ``prompt_group`` (whole passages) or ``record``."""
    groups = prompt_groups(samples, min_prefix) if val_split == "prompt_group" else None
    return validation_indices(len(samples), val_size, seed, groups)


def split_validation(samples: Sequence[Sample], held: Sequence[int]):
    val = set(held)
    return [s for i, s in enumerate(samples) if i not in val], [samples[i] for i in sorted(val)]
