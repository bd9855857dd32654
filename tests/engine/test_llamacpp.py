"""The llamacpp engine on a tiny exported Gemma-3: the GGUF round trip (llama.cpp gives the builtin
engine's greedy tokens), LoRA adapters, stop strings, streaming, max_tokens, slots under concurrency,
context limits, structured output and the real HTTP server."""
from __future__ import annotations

import json
import threading

import pytest

from ragtune.core.errors import ConfigError
from ragtune.engine.base import ENGINES, PromptTooLongError, SamplingParams

pytest.importorskip("llama_cpp")

# the second prompt is longer than the sliding window (8 tokens): the per-layer pattern matters
PROMPTS = ["the pump", "what is the valve pressure in bar at the north station filter", "x",
           "replace every 500 hours the original filter of the pump", "which model of the station"]


@pytest.fixture(scope="module")
def builtin(g3_readable_dir):
    from ragtune.engine.builtin import BuiltinEngine

    engine = BuiltinEngine.load(str(g3_readable_dir), dtype="fp32", device="cpu")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def llama(g3_export):
    from ragtune.engine.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine.load(str(g3_export), slots=3, max_model_len=256)
    yield engine
    engine.close()


def test_registered_with_typed_settings():
    from ragtune.engine.llamacpp import LlamaCppEngine
    from ragtune.serve.server import ServeConfig

    assert ENGINES.get("llamacpp") is LlamaCppEngine and LlamaCppEngine.kind == "llm"
    cfg = ServeConfig(model="m.gguf", engine="llamacpp", slots=2, threads=1)
    assert (cfg.settings.slots, cfg.settings.threads) == (2, 1)
    with pytest.raises(ConfigError, match="'slots' is a setting of engine llamacpp, not of engine 'builtin'"):
        ServeConfig.build(None, model="m", engine="builtin", slots=2)
    with pytest.raises(ConfigError, match="slots"):
        ServeConfig.build(None, model="m.gguf", engine="llamacpp", slots=0)
    assert ServeConfig(model="m.gguf", engine="llamacpp", extra_buffers="off").settings.extra_buffers == "off"
    with pytest.raises(ConfigError, match="extra_buffers"):
        ServeConfig.build(None, model="m.gguf", engine="llamacpp", extra_buffers="maybe")


def test_extra_buffers_auto_is_off_exactly_where_llama_cpp_reports_amx():
    """On AMX CPUs ggml's AMX matmul segfaults on q8_0 weights (the q8_0 test below crashed there);
    ``auto`` keeps llama.cpp's extra buffers everywhere else (repacked kernels are faster)."""
    from ragtune.engine.llamacpp import _llama_cpp, _use_extra_buffers

    lc = _llama_cpp()
    amx = b"AMX_INT8 = 1" in lc.llama_print_system_info()
    assert _use_extra_buffers(lc, "auto") is (not amx)
    assert _use_extra_buffers(lc, "on") is True and _use_extra_buffers(lc, "off") is False


def test_round_trip_same_prompt_ids_and_greedy_tokens_as_builtin(builtin, llama):
    assert llama.prompt == builtin.prompt
    for p in PROMPTS:
        assert llama.encode_chat(p) == builtin.encode_chat(p)  # one prompt builder, one tokenizer
    params = SamplingParams(max_tokens=24)
    want = builtin.generate(PROMPTS, params)
    got = llama.generate(PROMPTS, params)
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    assert [c.text for c in got] == [c.text for c in want]
    assert all(c.finish_reason == "length" and c.completion_tokens == 24 for c in got)
    assert got[1].prompt_tokens == len(builtin.encode_chat(PROMPTS[1])) > 8


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_quantised_exports_load_and_mostly_agree(g3_readable_dir, builtin, tmp_path, quant):
    from ragtune.engine.llamacpp import LlamaCppEngine
    from ragtune.export.job import ExportConfig

    out = ExportConfig(model=str(g3_readable_dir), output=str(tmp_path / quant), quant=quant).execute().output
    engine = LlamaCppEngine.load(str(out), slots=2, max_model_len=128)
    try:
        params = SamplingParams(max_tokens=8)
        got, want = engine.generate(PROMPTS, params), builtin.generate(PROMPTS, params)
        same_first = sum(g.token_ids[0] == w.token_ids[0] for g, w in zip(got, want))
        assert same_first >= 4, [(g.token_ids, w.token_ids) for g, w in zip(got, want)]
    finally:
        engine.close()


def test_lora_adapter_gguf_equals_merged_and_builtin_with_adapter(g3_lora_run, tmp_path):
    from ragtune.engine.builtin import BuiltinEngine
    from ragtune.engine.llamacpp import LlamaCppEngine
    from ragtune.export.job import ExportConfig

    merged = ExportConfig(model=str(g3_lora_run), output=str(tmp_path / "merged"), quant="f32").execute().output
    lora = ExportConfig(model=str(g3_lora_run), output=str(tmp_path / "lora"), quant="f32", lora=True).execute().output
    params = SamplingParams(max_tokens=16)
    ref = BuiltinEngine.load(str(g3_lora_run / "merged"), dtype="fp32", device="cpu")
    want = [c.token_ids for c in ref.generate(PROMPTS, params)]
    ref.close()
    results = {}
    for label, folder in (("merged", merged), ("lora", lora)):
        engine = LlamaCppEngine.load(str(folder), slots=2, max_model_len=128)
        results[label] = [c.token_ids for c in engine.generate(PROMPTS, params)]
        if label == "lora":
            assert engine.stats()["adapter"].endswith("adapter-f32.gguf")
        engine.close()
    assert results["merged"] == want
    assert results["lora"] == want


def test_max_tokens_stop_strings_and_streaming_like_builtin(llama, builtin):
    full = llama.generate(["the pump"], SamplingParams(max_tokens=20))[0]
    assert full.finish_reason == "length" and full.completion_tokens == 20
    stop = full.text[6:9]
    cut = full.text.find(stop)
    deltas: list[str] = []
    ids = llama.encode_chat("the pump")
    got = llama.submit(ids, SamplingParams(max_tokens=20, stop=(stop, "zzzz")), on_delta=deltas.append).result(60)
    want = builtin.submit(ids, SamplingParams(max_tokens=20, stop=(stop, "zzzz"))).result(60)
    assert got.text == want.text == full.text[:cut]
    assert got.finish_reason == "stop" and got.completion_tokens < 20
    assert "".join(deltas) == got.text and len(deltas) >= 2
    assert all(stop not in "".join(deltas[: i + 1]) for i in range(len(deltas)))


def test_eos_token_ends_the_answer(g3_export):
    from ragtune.engine.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine.load(str(g3_export), slots=1, max_model_len=128)
    try:
        ids = engine.generate(["the pump"], SamplingParams(max_tokens=12))[0].token_ids
        k = next(k for k in range(1, len(ids)) if ids[k] not in ids[:k])
        engine.eos_ids = {ids[k]}  # declare that token EOS: the answer must end right before it
        out = engine.generate(["the pump"], SamplingParams(max_tokens=12))[0]
        assert out.finish_reason == "stop" and out.token_ids == ids[:k]
    finally:
        engine.close()


def test_concurrent_requests_share_slots_and_match_single_results(llama):
    params = SamplingParams(max_tokens=12)
    singles = [llama.submit(llama.encode_chat(p), params).result(60).token_ids for p in PROMPTS]
    before = dict(llama.stats()["generating_slots_histogram"])
    results: dict[int, list[int]] = {}

    def ask(i: int) -> None:
        results[i] = llama.submit(llama.encode_chat(PROMPTS[i % len(PROMPTS)]), params).result(60).token_ids

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(9)] == [singles[i % len(PROMPTS)] for i in range(9)]
    after = llama.stats()["generating_slots_histogram"]
    assert after.get(3, 0) > before.get(3, 0)  # steps that decoded three requests together


def test_sampling_is_seeded(llama):
    params = SamplingParams(max_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    a = llama.generate(["the pump"], params)[0].token_ids
    assert llama.generate(["the pump"], params)[0].token_ids == a
    others = {tuple(llama.generate(["the pump"], SamplingParams(max_tokens=10, temperature=1.0, seed=s))[0].token_ids)
              for s in range(4)}
    assert len(others) > 1


def test_context_limit_and_bad_input(llama):
    long_ids = llama.encode_text("the pump " * 120)
    assert len(long_ids) + 16 > 256
    with pytest.raises(PromptTooLongError, match="context limit is 256 tokens"):
        llama.submit(long_ids, SamplingParams(max_tokens=16))
    with pytest.raises(PromptTooLongError):
        llama.generate_ids([long_ids], SamplingParams(max_tokens=16))
    with pytest.raises(ConfigError, match="outside this model's vocabulary of 384"):
        llama.submit([1, 99999], SamplingParams(max_tokens=2))


def test_json_schema_response_format(llama):
    import jsonschema

    from ragtune.engine.constrained import parse_response_format

    schema = {"type": "object", "properties": {"unit": {"enum": ["bar", "psi"]},
                                               "value": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["unit", "value"], "additionalProperties": False}
    fmt = parse_response_format({"type": "json_schema", "json_schema": {"name": "p", "schema": schema}})
    out = llama.generate(PROMPTS, SamplingParams(max_tokens=40, response_format=fmt))
    for c in out:
        assert c.finish_reason == "stop", c.text
        jsonschema.validate(json.loads(c.text), schema)


def test_loading_refuses_what_is_not_gguf(g3_readable_dir, g3_export, g3_lora_run, tmp_path):
    from ragtune.engine.llamacpp import LlamaCppEngine

    with pytest.raises(ConfigError, match="loads GGUF models") as e:
        LlamaCppEngine.load(str(g3_readable_dir))
    assert "ragtune export" in (e.value.hint or "")
    with pytest.raises(ConfigError, match="takes a GGUF LoRA adapter") as e:
        LlamaCppEngine.load(str(g3_export / "model-f32.gguf"), adapter=str(g3_lora_run / "adapter"))
    assert "--lora" in (e.value.hint or "")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF not really")
    with pytest.raises(ConfigError, match="is not a GGUF file"):
        LlamaCppEngine.load(str(junk))
    import shutil

    from ragtune.core.errors import BackendError

    cut = tmp_path / "cut"
    shutil.copytree(g3_export / "tokenizer", cut / "tokenizer")
    data = (g3_export / "model-f32.gguf").read_bytes()
    (cut / "m.gguf").write_bytes(data[: len(data) // 2])  # a download cut in half
    with pytest.raises(BackendError, match="could not load"):
        LlamaCppEngine.load(str(cut / "m.gguf"), max_model_len=64)


def test_served_over_http_with_the_same_api(g3_export):
    import httpx

    from ragtune.serve.server import ServeConfig

    dep = ServeConfig(model=str(g3_export), engine="llamacpp", port=0, slots=2, max_model_len=128).execute()
    try:
        with httpx.Client(base_url=dep.url, timeout=60) as http:
            msgs = [{"role": "user", "content": "the pump"}]
            body = http.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 8}).json()
            assert body["model"] == "g3-readable" and body["choices"][0]["finish_reason"] == "length"
            assert body["choices"][0]["message"]["content"] == dep.engine.generate([msgs], SamplingParams(max_tokens=8))[0].text
            with http.stream("POST", "/v1/chat/completions",
                             json={"messages": msgs, "max_tokens": 8, "stream": True}) as r:
                lines = [x[6:] for x in r.iter_lines() if x.startswith("data: ")]
            assert lines[-1] == "[DONE]"
            streamed = "".join(json.loads(x)["choices"][0]["delta"].get("content", "") for x in lines[:-1])
            assert streamed == body["choices"][0]["message"]["content"]
            too_long = http.post("/v1/completions", json={"prompt": "pump " * 200, "max_tokens": 8})
            assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"
            fmt = http.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 30,
                                                          "response_format": {"type": "json_object"}})
            assert fmt.status_code == 200 and fmt.json()["choices"][0]["message"]["content"].startswith("{")
            stats = http.get("/metrics").json()["engine"]
            assert stats["slots"] == 2 and stats["requests"] >= 3
    finally:
        dep.stop()


def test_infer_and_trainable_module_use_the_engine(g3_export, llama, tmp_path):
    import ragtune as rt
    from ragtune.infer.runner import InferConfig, run_infer

    evalset = tmp_path / "eval.json"
    evalset.write_text(json.dumps([{"instruction": p} for p in PROMPTS]))
    rows = run_infer(InferConfig(evalset=str(evalset), output=str(tmp_path / "preds.json"), model=str(g3_export),
                                 engine="llamacpp", slots=2, max_model_len=128, max_tokens=6), show_progress=False)
    want = llama.generate(PROMPTS, SamplingParams(max_tokens=6))
    assert [r["prediction"] for r in rows] == [c.text for c in want]
    module = rt.TrainableModule(str(g3_export)).deploy_method("llamacpp", slots=2, max_model_len=128)
    try:
        assert module("the pump", max_tokens=6) == want[0].text
    finally:
        module.stop()


@pytest.mark.parametrize("embedding", [None, "f16"])
def test_q8_0_export_is_byte_identical_to_llama_cpp_own_quantiser(g3_dir, tmp_path, embedding):
    """ragtune writes q8_0 with gguf-py's numpy port of ggml's quantiser (no llama.cpp needed); it must
    give the bytes ``llama-quantize ... Q8_0`` gives from the f32 export, tensor by tensor, also with
    ``--token-embedding-type f16``. So a q8_0 export that answers differently from f16 does so
    because of the q8_0 format and llama.cpp's q8_0 kernels, not because of the exporter
    (benchmarks/results/export.md)."""
    import gguf

    from ragtune.engine.llamacpp import _llama_cpp
    from ragtune.export.gguf import write_gguf

    f32 = write_gguf(g3_dir, tmp_path / "m-f32.gguf", "f32")
    ours = write_gguf(g3_dir, tmp_path / "m-q8_0.gguf", "q8_0", token_embedding_type=embedding)
    theirs = tmp_path / "m-llama-q8_0.gguf"
    llama_cpp = _llama_cpp()  # with ragtune's log callback (under pytest's capture the default one crashes)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, 1
    if embedding == "f16":
        params.token_embedding_type = llama_cpp.GGML_TYPE_F16
    assert llama_cpp.llama_model_quantize(str(f32).encode(), str(theirs).encode(), params) == 0
    mine = {t.name: t for t in gguf.GGUFReader(str(ours)).tensors}
    ref = {t.name: t for t in gguf.GGUFReader(str(theirs)).tensors}
    assert sorted(mine) == sorted(ref)
    quantised = [n for n, t in ref.items() if t.tensor_type == gguf.GGMLQuantizationType.Q8_0]
    assert ("token_embd.weight" in quantised) is (embedding is None) and len(quantised) >= 20
    assert ref["token_embd.weight"].tensor_type.name == ("Q8_0" if embedding is None else "F16")
    for name, t in ref.items():
        assert mine[name].tensor_type == t.tensor_type, name
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            assert bytes(mine[name].data) == bytes(t.data), name


def test_q4_k_m_export_takes_the_token_embedding_type(g3_dir, tmp_path):
    import gguf

    from ragtune.export.gguf import write_gguf

    def types(**kw) -> dict[str, str]:
        out = write_gguf(g3_dir, tmp_path / f"m{len(kw)}.gguf", "q4_k_m", **kw)
        return {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}

    default, f16 = types(), types(token_embedding_type="f16")
    assert default["token_embd.weight"] != "F16" and f16["token_embd.weight"] == "F16"
    # the rest is llama.cpp's k-quant mix (on the tiny model's 64-wide rows: its q5_0/q8_0 fallbacks)
    assert {k: v for k, v in f16.items() if k != "token_embd.weight"} == \
        {k: v for k, v in default.items() if k != "token_embd.weight"}
    assert "F32" not in {v for k, v in f16.items() if k.endswith(("attn_q.weight", "ffn_up.weight"))}
