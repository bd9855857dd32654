"""``kd``: LoRA fine-tuning with knowledge distillation from a teacher's top-k token distribution.

The training file is what ``ragtune data label --logprobs K`` writes: Alpaca rows whose ``teacher``
field holds, per answer token, the teacher's generated ``token_ids`` and its ``top_logprobs``
(``[[id, logprob], ...]``, from a ragtune or vLLM server with ``return_tokens_as_token_ids``, or a
local model). Per labelled answer token the loss is

    (1 - kd_alpha) * CE(student, label) + kd_alpha * T^2 * KL(p_teacher || p_student)

where ``p_teacher`` is the teacher's top-k renormalised (softmax of its k log-probabilities at
temperature T) and ``p_student`` the student's full-vocabulary softmax at T, read at the same k
token ids (Hinton et al.'s soft targets, restricted to the k tokens the OpenAI API returns).
Tokens without teacher information (the EOS, an answer longer than what the teacher returned)
get the CE term alone. The teacher's ids must be the student's own tokenization of the answer:
a row where they differ is an error naming it (KD needs the student's tokenizer), never a silent
misalignment. Everything else (adapter, saving, serving) is LoRA's.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ...core.errors import ConfigError, DataError
from ...core.log import get_logger
from ..base import METHODS
from .config import LoraConfig
from .methods import LoraMethod

log = get_logger(__name__)


class KdConfig(LoraConfig):
    method: Literal["kd"] = "kd"  # type: ignore[assignment]
    kd_alpha: float = Field(0.5, ge=0, le=1, description="Weight of the KL term (0 = plain SFT on the teacher's answers).")
    kd_temperature: float = Field(1.0, gt=0, description="Softmax temperature of teacher and student in the KL term.")
    kd_require_all: bool = Field(False, description="Refuse rows without teacher logprobs (default: they train on CE only, counted).")
    pack_shared_prefix: bool = Field(False, description="kd trains unpacked (teacher targets are per record).")


def kd_loss_sum(model, input_ids, attention_mask, labels, position_ids, extra) -> tuple[Any, int]:
    """Summed CE + KL over labelled positions (the trainer divides by the labelled-token count)."""
    import torch
    import torch.nn.functional as F

    from .loss import answer_logits

    logits, targets = answer_logits(model, input_ids, attention_mask, labels, position_ids)
    ids, teacher_lp, valid, alpha, temp = extra
    ce = F.cross_entropy(logits, targets, reduction="none")
    if not bool(valid.any()):
        return ce.sum(), int(targets.numel())
    p_t = torch.softmax(teacher_lp[valid] / temp, dim=-1)                       # (n_valid, k)
    log_q = torch.log_softmax(logits[valid] / temp, dim=-1).gather(1, ids[valid])
    kl = (p_t * (torch.log(p_t.clamp_min(1e-12)) - log_q)).sum(-1)
    loss = (1 - alpha) * ce.sum() + alpha * temp ** 2 * kl.sum() + alpha * ce[~valid].sum()
    return loss, int(targets.numel())


class KdMethod(LoraMethod):
    name = "kd"
    config_cls = KdConfig
    description = "LoRA + distillation: KL to the teacher's top-k token distribution (data label --logprobs)"
    loss_fn = staticmethod(kd_loss_sum)

    def validate(self, cfg):
        super().validate(cfg)
        if cfg.pack_shared_prefix:
            raise ConfigError("method kd trains unpacked: teacher targets belong to single records",
                              hint="set pack_shared_prefix: false")

    def attach_targets(self, cfg, tokenizer, samples):
        """Each sample gets ``teacher``: (top ids, top logprobs, valid) per labelled position."""
        from ...data.readers import read_rows
        from .data import IGNORE

        rows = read_rows(cfg.train)[: len(samples)]
        with_teacher, k_seen = 0, set()
        for i, (sample, row) in enumerate(zip(samples, rows)):
            teacher = row.data.get("teacher")
            positions = [j for j, lab in enumerate(sample.labels[1:], start=1) if lab != IGNORE]
            if teacher is None:
                if cfg.kd_require_all:
                    raise DataError("no teacher logprobs", file=cfg.train, record=i, field="teacher",
                                    hint="write the file with `ragtune data label --logprobs K`")
                sample.teacher = None
                continue
            t_ids, tops = _teacher_fields(teacher, cfg.train, i)
            answer = [sample.labels[j] for j in positions]
            n = min(len(t_ids), len(answer))
            if t_ids[:n] != answer[:n]:
                raise DataError(f"the teacher's token ids {t_ids[:8]} differ from the student's tokenization of the "
                                f"answer {answer[:8]}", file=cfg.train, record=i, field="teacher.token_ids",
                                hint="kd needs a teacher with the student's tokenizer (e.g. a ragtune server "
                                     "on a larger model of the same family)")
            sample.teacher = (tops[:n], len(positions))
            with_teacher += 1
            k_seen.update(len(t) for t in tops[:n])
        if len(k_seen) > 1:
            raise DataError(f"rows hold different numbers of top logprobs {sorted(k_seen)}", file=cfg.train,
                            field="teacher.top_logprobs", hint="label the whole file with one --logprobs K")
        self.k = next(iter(k_seen), 0)
        if self.k == 0 and with_teacher:
            raise DataError("the teacher logprobs hold no top tokens (--logprobs 0)", file=cfg.train,
                            field="teacher.top_logprobs", hint="label with --logprobs K, K >= 1")
        log.info("kd: %d of %d samples carry the teacher's top-%d distribution (the others: CE only)",
                 with_teacher, len(samples), self.k)
        return samples

    def batch_extras(self, items, device):
        import torch

        from .data import IGNORE

        if not self.k:          # no row carries teacher logprobs: the plain loss
            return None
        ids_rows, lp_rows, valid_rows = [], [], []
        for s in items:
            teacher = getattr(s, "teacher", None)
            n_pos = teacher[1] if teacher else sum(1 for lab in s.labels[1:] if lab != IGNORE)
            tops = teacher[0] if teacher else []
            for p in range(n_pos):
                if p < len(tops):
                    ids_rows.append([int(a) for a, _ in tops[p]])
                    lp_rows.append([float(b) for _, b in tops[p]])
                    valid_rows.append(True)
                else:
                    ids_rows.append([0] * self.k)
                    lp_rows.append([0.0] * self.k)
                    valid_rows.append(False)
        return (torch.tensor(ids_rows, dtype=torch.long, device=device).reshape(-1, self.k),
                torch.tensor(lp_rows, dtype=torch.float32, device=device).reshape(-1, self.k),
                torch.tensor(valid_rows, dtype=torch.bool, device=device),
                self.cfg_alpha, self.cfg_temperature)

    def prepare(self, cfg, model):
        self.cfg_alpha, self.cfg_temperature = cfg.kd_alpha, cfg.kd_temperature
        return super().prepare(cfg, model)


def _teacher_fields(teacher: Any, file: str, record: int) -> tuple[list[int], list[list[list[float]]]]:
    if not isinstance(teacher, dict):
        raise DataError("must be an object {token_ids, top_logprobs}", file=file, record=record, field="teacher")
    ids, tops = teacher.get("token_ids"), teacher.get("top_logprobs")
    if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
        raise DataError("must be a list of token ids", file=file, record=record, field="teacher.token_ids")
    if not isinstance(tops, list) or len(tops) != len(ids):
        raise DataError(f"must hold one entry per token ({len(ids)})", file=file, record=record,
                        field="teacher.top_logprobs")
    for t in tops:
        if not isinstance(t, list) or not all(isinstance(a, list) and len(a) == 2 for a in t):
            raise DataError("each entry must be [[token_id, logprob], ...]", file=file, record=record,
                            field="teacher.top_logprobs")
    return ids, tops


kd = METHODS.register("kd", KdMethod())
