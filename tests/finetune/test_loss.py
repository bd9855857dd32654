"""The answer-only lm_head loss equals the plain full-logits masked CE, value and gradients."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def _batch(vocab: int):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (3, 20), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0                      # right padding on one row
    labels = torch.full_like(ids, -100)
    labels[0, 12:18] = ids[0, 12:18]      # answers at different spots, one multi-span row
    labels[1, 8:15] = ids[1, 8:15]
    labels[2, 3:6] = ids[2, 3:6]
    labels[2, 16:] = ids[2, 16:]
    return ids, mask, labels


def test_answer_only_loss_equals_full_logits_loss(tiny_llm_dir):
    from transformers import AutoModelForCausalLM

    from ragtune.finetune.llm.loss import answer_only_loss_sum, full_logits_loss_sum

    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir, dtype=torch.float32)
    ids, mask, labels = _batch(model.config.vocab_size)

    fast, n_fast = answer_only_loss_sum(model, ids, mask, labels)
    fast.backward()
    fast_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    ref, n_ref = full_logits_loss_sum(model, ids, mask, labels)
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    assert n_fast == n_ref == int((labels[:, 1:] != -100).sum()) == 20
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    assert fast_grads.keys() == ref_grads.keys() and len(fast_grads) > 10
    for name in ref_grads:  # tied embedding/lm_head included
        torch.testing.assert_close(fast_grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_answer_only_loss_through_lora(tiny_llm_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ragtune.finetune.llm.loss import answer_only_loss_sum, full_logits_loss_sum

    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir, dtype=torch.float32)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "down_proj"], init_lora_weights=False))
    ids, mask, labels = _batch(model.config.vocab_size)
    fast, _ = answer_only_loss_sum(model, ids, mask, labels)
    ref, _ = full_logits_loss_sum(model, ids, mask, labels)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
