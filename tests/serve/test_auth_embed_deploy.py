"""API key, the embeddings endpoint, model-source resolution and rt.deploy.builtin (real servers)."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from ragtune.core.errors import ConfigError, ModelNotFoundError
from ragtune.core.prompt import PromptConfig
from ragtune.models.source import resolve_source


def test_api_key_required_when_set(llm_engine):
    from ragtune.serve.app import create_app
    from ragtune.serve.server import ServerThread

    with ServerThread(create_app(llm_engine, api_key="s3cret"), port=0) as srv:
        assert srv.host == "127.0.0.1"
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        none = httpx.post(srv.url + "/v1/chat/completions", json=body)
        wrong = httpx.post(srv.url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer nope"})
        models = httpx.get(srv.url + "/v1/models")
        ok = httpx.post(srv.url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer s3cret"},
                        timeout=60)
        health = httpx.get(srv.url + "/health")  # load balancers probe without a key
        metrics = httpx.get(srv.url + "/metrics")
    for resp in (none, wrong, models, metrics):
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2
    assert health.status_code == 200


def test_embeddings_endpoint(tiny_embedder_dir):
    from sentence_transformers import SentenceTransformer

    from ragtune.serve.app import create_app
    from ragtune.serve.server import ServeConfig, ServerThread, build_engine

    engine = build_engine(ServeConfig(model=str(tiny_embedder_dir), device="cpu"))
    assert engine.kind == "embedding"
    texts = ["the pump pressure", "replace the filter every months"]
    with ServerThread(create_app(engine), port=0) as srv:
        resp = httpx.post(srv.url + "/v1/embeddings", json={"input": texts, "model": engine.name}, timeout=60)
        single = httpx.post(srv.url + "/v1/embeddings", json={"input": texts[0]}, timeout=60).json()
        too_long = httpx.post(srv.url + "/v1/embeddings", json={"input": "pump " * 400}, timeout=60)
        chat = httpx.post(srv.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    body = resp.json()
    assert resp.status_code == 200 and [d["index"] for d in body["data"]] == [0, 1]
    got = np.array([d["embedding"] for d in body["data"]])
    expected = SentenceTransformer(str(tiny_embedder_dir), device="cpu").encode(texts)
    assert got.shape == (2, 32)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(single["data"][0]["embedding"], expected[0], atol=1e-5)
    assert body["usage"]["prompt_tokens"] > 4
    assert too_long.status_code == 400 and "128" in too_long.json()["error"]["message"]
    assert chat.status_code == 400 and "/v1/embeddings" in chat.json()["error"]["message"]


def _finetune_dir(tmp_path, *, merged: bool, adapter: bool, base="gemma-3-270m"):
    out = tmp_path / "run1"
    out.mkdir()
    manifest = {"base_model": base, "base_model_path": str(tmp_path / "gone"), "method": "lora",
                "prompt": {"system": "You are a helpful assistant.", "drop_builtin_system": True, "template": None}}
    (out / "ragtune_finetune.json").write_text(json.dumps(manifest))
    if merged:
        (out / "merged").mkdir()
        (out / "merged" / "config.json").write_text("{}")
    if adapter:
        (out / "adapter").mkdir()
        (out / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": 8}))
    return out


def test_resolve_source_layouts(tmp_path):
    merged = _finetune_dir(tmp_path / "a", merged=True, adapter=True) if (tmp_path / "a").mkdir() is None else None
    src = resolve_source(merged)
    assert src.model == str(merged / "merged") and src.adapter is None and src.name == "run1"
    assert src.prompt == {"system": "You are a helpful assistant.", "drop_builtin_system": True}
    assert resolve_source(merged / "merged").prompt == src.prompt  # DIR/merged still reads the manifest

    (tmp_path / "b").mkdir()
    lora = _finetune_dir(tmp_path / "b", merged=False, adapter=True)
    src = resolve_source(lora)
    assert (src.model, src.adapter) == ("gemma-3-270m", lora / "adapter")
    src = resolve_source(lora / "adapter")  # a bare PEFT adapter names its base
    assert (src.model, src.adapter) == ("gemma-3-270m", lora / "adapter")
    src = resolve_source("some/base", adapter=lora)  # --adapter DIR means DIR/adapter
    assert (src.model, src.adapter) == ("some/base", lora / "adapter")

    saved = PromptConfig.coerce(src.prompt | {"system": "from manifest", "drop_builtin_system": True})
    cfg = PromptConfig(system="from flag").over(saved)   # explicit settings win, the rest is the manifest's
    assert cfg.system == "from flag" and cfg.drop_builtin_system is True
    with pytest.raises(ModelNotFoundError, match="adapter_config.json"):
        resolve_source("gemma-3-270m", adapter=tmp_path)
    (tmp_path / "c").mkdir()
    empty = _finetune_dir(tmp_path / "c", merged=False, adapter=False)
    with pytest.raises(ModelNotFoundError, match="neither merged/ nor adapter/"):
        resolve_source(empty)


def test_lora_adapter_is_applied(tiny_llm_dir, tmp_path):
    """Base + adapter really changes the output, and equals the merged weights' output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ragtune.engine.builtin import BuiltinEngine, SamplingParams

    base = AutoModelForCausalLM.from_pretrained(tiny_llm_dir, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_llm_dir).save_pretrained(tmp_path / "merged")
    params = SamplingParams(max_tokens=12)
    prompts = ["what is the pump", "the valve pressure"]
    plain = BuiltinEngine.load(str(tiny_llm_dir), dtype="fp32").generate(prompts, params)
    with_adapter = BuiltinEngine.load(str(tiny_llm_dir), str(tmp_path / "adapter"), dtype="fp32").generate(prompts, params)
    from_merged = BuiltinEngine.load(str(tmp_path / "merged"), dtype="fp32").generate(prompts, params)
    assert [c.token_ids for c in with_adapter] == [c.token_ids for c in from_merged]
    assert [c.token_ids for c in with_adapter] != [c.token_ids for c in plain]


def test_deploy_builtin_and_client(readable_llm_dir):
    import ragtune as rt
    from ragtune.serve.deploy import get_deploy_method

    assert get_deploy_method("vllm") is rt.deploy.vllm and get_deploy_method(rt.deploy.builtin) is rt.deploy.builtin
    with pytest.raises(ConfigError, match="unknown deploy setting 'prot'"):
        rt.deploy.builtin(prot=1)
    dep = rt.deploy.builtin(dtype="fp32", api_key="k1", default_max_tokens=6).deploy(str(readable_llm_dir),
                                                                                      prompt="You answer briefly.")
    try:
        assert dep.url.startswith("http://127.0.0.1:")
        llm = dep.client(max_tokens=6)
        out = llm("what is the pump")
        assert isinstance(out, str) and out
        assert dep.engine.prompt.system == "You answer briefly."
        data = llm.chat("what is the pump")
        assert data["usage"]["completion_tokens"] == 6 and data["choices"][0]["message"]["content"] == out
        assert httpx.get(dep.url + "/v1/models").status_code == 401
        raw = httpx.post(dep.url + "/v1/chat/completions", headers={"Authorization": "Bearer k1"}, timeout=60,
                         json={"messages": [{"role": "user", "content": "x"}]}).json()
        assert raw["usage"]["completion_tokens"] == 6  # the deployment's default_max_tokens
    finally:
        dep.stop()
