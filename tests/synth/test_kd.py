"""The kd fine-tune method: its loss against hand-computed references, and a real training run on
data written by `ragtune data label --logprobs` from an HTTP teacher."""
import json

import pytest
import torch

from ragtune.core.errors import ConfigError, DataError
from ragtune.finetune import METHODS
from ragtune.finetune.llm.kd import kd_loss_sum
from ragtune.finetune.llm.loss import answer_only_loss_sum, full_logits_loss_sum

from .teacher_server import running_teacher


@pytest.fixture(scope="module")
def student(tiny_llm_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llm_dir, dtype=torch.float32)


def _batch(n=2, length=12, answer=4, vocab=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (n, length), generator=g)
    labels = torch.full_like(ids, -100)
    labels[:, -answer:] = ids[:, -answer:]
    return ids, torch.ones_like(ids), labels


def test_kd_loss_is_ce_at_alpha_0_and_the_kl_by_hand_at_alpha_1(student):
    ids, mask, labels = _batch()
    n_pos = int((labels[:, 1:] != -100).sum())
    k = 5
    top_ids = torch.randint(0, 300, (n_pos, k), generator=torch.Generator().manual_seed(1))
    top_lp = torch.log_softmax(torch.randn(n_pos, k, generator=torch.Generator().manual_seed(2)), -1)
    valid = torch.ones(n_pos, dtype=torch.bool)
    valid[-1] = False
    with torch.no_grad():
        ce0, n0 = kd_loss_sum(student, ids, mask, labels, None, (top_ids, top_lp, valid, 0.0, 1.0))
        ref, n_ref = answer_only_loss_sum(student, ids, mask, labels)
        full, _ = full_logits_loss_sum(student, ids, mask, labels)
        assert n0 == n_ref == n_pos and float(ce0) == pytest.approx(float(ref), rel=1e-6)
        assert float(ref) == pytest.approx(float(full), rel=1e-5)
        temp = 2.0
        kd1, _ = kd_loss_sum(student, ids, mask, labels, None, (top_ids, top_lp, valid, 1.0, temp))
        # by hand, from the full logits: KL on valid positions, CE on the invalid one
        logits = student(input_ids=ids, attention_mask=mask).logits.float()[:, :-1][labels[:, 1:] != -100]
        targets = labels[:, 1:][labels[:, 1:] != -100]
        p_t = torch.softmax(top_lp / temp, -1)
        log_q = torch.log_softmax(logits / temp, -1).gather(1, top_ids)
        kl = (p_t * (p_t.log() - log_q)).sum(-1)
        ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        want = temp ** 2 * kl[valid].sum() + ce[~valid].sum()
        assert float(kd1) == pytest.approx(float(want), rel=1e-5)


def _labelled(tmp_path, tokenizer, n=8):
    facts = [(f"The code of pump P{i} is K-{100 + i}.", f"What is the code of pump P{i}?") for i in range(n)]
    rows = [{"question": q, "context": c} for c, q in facts]
    src = tmp_path / "q.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    from ragtune.synth import label

    with running_teacher() as teacher:
        teacher.tokenizer = tokenizer
        label(input=str(src), output=str(tmp_path / "kd.json"), teacher=teacher.base_url, logprobs=4)
    return tmp_path / "kd.json"


def test_kd_trains_on_label_output_and_moves_toward_the_teacher(tmp_path, tiny_llm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llm_dir)
    data = _labelled(tmp_path, tok)
    rows = json.loads(data.read_text())
    assert len(rows) == 8 and all(len(r["teacher"]["top_logprobs"][0]) == 4 for r in rows)
    kd = METHODS.get("kd")
    common = {"base": str(tiny_llm_dir), "train": str(data), "max_steps": 12, "learning_rate": 5e-3,
              "per_device_train_batch_size": 4, "cutoff_len": 256, "merge": False, "logging_steps": 1,
              "save_minutes": None}
    res = kd.run(output=str(tmp_path / "kd"), kd_alpha=1.0, **common)
    hist = [h["loss"] for h in res.metrics["history"] if "loss" in h]
    assert res.adapter is not None and (res.adapter / "adapter_config.json").exists()
    assert sum(hist[-3:]) / 3 < sum(hist[:3]) / 3            # the distillation loss goes down
    lora = METHODS.get("lora").run(output=str(tmp_path / "lora"), **common)
    first_lora = [h["loss"] for h in lora.metrics["history"] if "loss" in h][0]
    assert hist[0] != pytest.approx(first_lora)             # the KL term is in the loss
    manifest = json.loads((tmp_path / "kd" / "ragtune_finetune.json").read_text())
    assert manifest["method"] == "kd" and manifest["adapter"] == "adapter"


def test_kd_refuses_a_teacher_with_another_tokenization(tmp_path, tiny_llm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llm_dir)
    data = _labelled(tmp_path, tok, n=4)
    rows = json.loads(data.read_text())
    rows[2]["teacher"]["token_ids"] = [t + 1 for t in rows[2]["teacher"]["token_ids"]]
    data.write_text(json.dumps(rows))
    with pytest.raises(DataError, match=r"record 2, field 'teacher.token_ids'.*differ"):
        METHODS.get("kd").run(base=str(tiny_llm_dir), train=str(data), output=str(tmp_path / "o"), max_steps=1)
    with pytest.raises(ConfigError, match="unpacked"):
        METHODS.get("kd").run(base=str(tiny_llm_dir), train=str(data), output=str(tmp_path / "o2"),
                              pack_shared_prefix=True)
    with pytest.raises(ConfigError, match="kd_alpha"):
        METHODS.get("kd").config(base="x", train="y", output="z", kd_alpha=2)
