"""The fast LoRA linear computes what peft's forward computes: same loss, same adapter gradients."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from .test_loss import _batch  # noqa: E402


def _lora_model(tiny_llm_dir, dtype, dropout=0.0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir, dtype=dtype)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear",
                                             init_lora_weights=False))  # B != 0: the branch matters
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()  # fp32 masters, as peft keeps them
    return model


def _loss_and_grads(model, ids, mask, labels):
    from ragtune.finetune.llm.loss import answer_only_loss_sum

    model.zero_grad()
    loss, _ = answer_only_loss_sum(model, ids, mask, labels)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_fast_lora_matches_peft_in_fp32(tiny_llm_dir):
    from ragtune.models.fast_lora import install

    model = _lora_model(tiny_llm_dir, torch.float32)
    ids, mask, labels = _batch(model.config.vocab_size)
    ref_loss, ref_grads = _loss_and_grads(model, ids, mask, labels)
    assert install(model) == 7 * model.config.num_hidden_layers
    loss, grads = _loss_and_grads(model, ids, mask, labels)

    assert grads.keys() == ref_grads.keys() and all("lora_" in n for n in grads) and len(grads) > 10
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    # and the fast path really ran (peft's own forward would match trivially)
    layer = next(m for m in model.modules() if hasattr(m, "_ragtune_peft_forward"))
    calls = []
    layer._ragtune_peft_forward = lambda *a, **k: calls.append(1)
    _loss_and_grads(model, ids, mask, labels)
    assert not calls


def test_fast_lora_in_bf16_is_as_accurate_as_peft(tiny_llm_dir):
    """With a bf16 base both round (peft in its output cast, the fast path in its products): against
    the fp32 truth the fast path's adapter gradients must be no worse than peft's own bf16 ones."""
    from ragtune.models.fast_lora import install

    ids, mask, labels = _batch(_lora_model(tiny_llm_dir, torch.float32).config.vocab_size)
    truth_loss, truth = _loss_and_grads(_lora_model(tiny_llm_dir, torch.float32), ids, mask, labels)
    model = _lora_model(tiny_llm_dir, torch.bfloat16)
    peft_loss, peft_grads = _loss_and_grads(model, ids, mask, labels)
    install(model)
    fast_loss, fast_grads = _loss_and_grads(model, ids, mask, labels)

    def worst(grads):
        for name, g in grads.items():
            assert g.dtype == torch.float32, name  # fp32 gradients for the fp32 master weights
        return max(float((grads[n] - truth[n]).norm() / truth[n].norm()) for n in truth)

    assert abs(float(fast_loss - truth_loss)) <= 1.25 * abs(float(peft_loss - truth_loss)) + 1e-3 * float(truth_loss)
    assert worst(fast_grads) <= 1.25 * worst(peft_grads)
    assert worst(fast_grads) < 0.1


def test_fast_lora_falls_back_to_peft_with_dropout(tiny_llm_dir):
    from ragtune.models.fast_lora import install

    model = _lora_model(tiny_llm_dir, torch.float32, dropout=0.5)
    install(model)
    layer = next(m for m in model.modules() if hasattr(m, "_ragtune_peft_forward"))
    calls = []
    original = layer._ragtune_peft_forward
    layer._ragtune_peft_forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    ids, mask, labels = _batch(model.config.vocab_size)
    _loss_and_grads(model, ids, mask, labels)
    assert calls  # dropout needs peft's own branch (the mask must match in backward)
