"""Slow: the real bundled gemma-3-270m conversion (~2 min, ~2 GB RAM)."""
import os

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def real_home(monkeypatch, tmp_path):
    # Reuse the user's cache when it already holds a conversion (CI pulls once up front).
    home = os.environ.get("RAGTUNE_SLOW_HOME") or str(tmp_path / "home")
    monkeypatch.setenv("RAGTUNE_HOME", home)
    return home


def test_converted_gemma_matches_gguf_logits(real_home):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragtune.models import pull_model
    from ragtune.models.convert import assemble_gguf

    converted = pull_model("gemma-3-270m").path
    gguf = assemble_gguf()
    prompt = "Please use the original text of the following paragraph to answer the question"
    tok = AutoTokenizer.from_pretrained(converted)
    ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    ours = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32)
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        a, b = ref(**ids).logits[0, -1], ours(**ids).logits[0, -1]
    assert torch.allclose(a, b, atol=1e-4), float((a - b).abs().max())
    assert ours.config.tie_word_embeddings
    assert ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()


def test_corrupted_cache_is_detected_and_rebuilt(real_home):
    from ragtune.models import list_models, pull_model

    path = pull_model("gemma-3-270m").path
    weights = path / "model.safetensors"
    with open(weights, "r+b") as fh:              # truncate: a disk error / killed copy
        fh.truncate(weights.stat().st_size - 4096)
    assert not {r.name: r for r in list_models()}["gemma-3-270m"].ready
    rebuilt = pull_model("gemma-3-270m").path
    assert {r.name: r for r in list_models()}["gemma-3-270m"].ready
    from ragtune.models import verify_materialised

    verify_materialised(rebuilt, deep=True)
