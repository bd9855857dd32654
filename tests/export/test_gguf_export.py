"""GGUF export without llama.cpp: file layout, metadata, tensors, quantisation error, refusals, CLI,
the Ollama Modelfile and the LoRA adapter layout (llama.cpp itself runs them in tests/engine)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ragtune.cli import main
from ragtune.export.gguf import ExportError, gguf_summary, write_gguf


def _reader(path):
    import gguf

    return gguf.GGUFReader(str(path))


def _tensors(path) -> dict:
    import gguf

    out = {}
    for t in _reader(path).tensors:
        data = np.array(t.data)
        if t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            data = gguf.quants.dequantize(data, t.tensor_type)
        out[t.name] = data.astype(np.float32).reshape([int(d) for d in reversed(t.shape)])
    return out


def _hf(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(next(path.glob("*.safetensors"))))


def test_f32_export_has_gemma3_metadata_and_exact_weights(g3_dir, tmp_path):
    out = write_gguf(g3_dir, tmp_path / "m.gguf", "f32")
    fields = _reader(out).fields
    assert fields["general.architecture"].contents() == "gemma3"
    assert fields["gemma3.block_count"].contents() == 3
    assert fields["gemma3.attention.sliding_window"].contents() == 8
    assert fields["gemma3.attention.sliding_window_pattern"].contents() == [True, False, True]
    assert fields["gemma3.rope.freq_base_swa"].contents() == 10000.0
    assert fields["gemma3.attention.key_length"].contents() == 16
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert len(fields["tokenizer.ggml.tokens"].data) == 384
    assert fields["tokenizer.ggml.bos_token_id"].contents() == 1
    assert fields["tokenizer.ggml.eos_token_id"].contents() == 2
    got, hf = _tensors(out), _hf(g3_dir)
    assert "output.weight" not in got  # tied: llama.cpp reuses token_embd
    np.testing.assert_array_equal(got["token_embd.weight"], hf["model.embed_tokens.weight"])
    np.testing.assert_array_equal(got["blk.1.attn_q.weight"], hf["model.layers.1.self_attn.q_proj.weight"])
    # Gemma's RMSNorm multiplies by (1 + w); llama.cpp's by w: the export stores 1 + w
    np.testing.assert_allclose(got["blk.0.attn_q_norm.weight"], hf["model.layers.0.self_attn.q_norm.weight"] + 1)
    np.testing.assert_allclose(got["output_norm.weight"], hf["model.norm.weight"] + 1)
    assert len(got) == len(hf) == 41


@pytest.mark.parametrize("quant,max_rel", [("f16", 1e-3), ("q8_0", 1.0 / 127 + 1e-6)])
def test_quantised_weights_are_within_the_format_error(g3_dir, tmp_path, quant, max_rel):
    out = write_gguf(g3_dir, tmp_path / f"m-{quant}.gguf", quant)
    summary = gguf_summary(out)
    kind = {"f16": "F16", "q8_0": "Q8_0"}[quant]
    assert summary["types"] == {"F32": 19, kind: 22}  # 1-D norms stay f32
    got, hf = _tensors(out), _hf(g3_dir)
    ref = hf["model.layers.0.mlp.down_proj.weight"]
    err = np.abs(got["blk.0.ffn_down.weight"] - ref).max() / np.abs(ref).max()
    assert 0 < err <= max_rel


@pytest.mark.parametrize("embedding_type,kind", [("f16", "F16"), ("f32", "F32")])
def test_token_embedding_type_keeps_the_tied_output_layer_apart_from_quant(g3_dir, tmp_path, embedding_type, kind):
    out = write_gguf(g3_dir, tmp_path / "m.gguf", "q8_0", token_embedding_type=embedding_type)
    types = {t.name: t.tensor_type.name for t in _reader(out).tensors}
    assert types["token_embd.weight"] == kind
    assert types["blk.0.ffn_down.weight"] == "Q8_0"
    assert sum(v == "Q8_0" for v in types.values()) == 21  # every other 2-D weight stays q8_0
    got, hf = _tensors(out), _hf(g3_dir)
    ref = hf["model.embed_tokens.weight"]
    np.testing.assert_array_equal(got["token_embd.weight"], ref.astype(np.float16).astype(np.float32)
                                  if kind == "F16" else ref)
    assert _reader(out).fields["general.file_type"].contents() == 7  # still a q8_0 model (as llama-quantize)


def test_write_is_atomic_and_refuses_unknown_quant(g3_dir, tmp_path):
    from ragtune.core.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown quant 'q3'"):
        write_gguf(g3_dir, tmp_path / "m.gguf", "q3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown token embedding type 'q4_0'; valid: f32, f16, q8_0"):
        write_gguf(g3_dir, tmp_path / "m.gguf", "q8_0", token_embedding_type="q4_0")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_refuses_an_attention_scale_llama_cpp_cannot_express(tiny_llm_dir, tmp_path):
    # tests/tiny_models.py's gemma keeps transformers' default query_pre_attn_scalar=256 with head_dim 16
    with pytest.raises(ExportError, match=r"query_pre_attn_scalar=256.*1/sqrt\(head_dim=16\)"):
        write_gguf(tiny_llm_dir, tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()


def test_refuses_unsupported_architectures_naming_them(g3_dir, tmp_path):
    import shutil

    other = shutil.copytree(g3_dir, tmp_path / "other")
    cfg = json.loads((other / "config.json").read_text())
    cfg["architectures"] = ["MambaForCausalLM"]
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError, match="MambaForCausalLM cannot be exported.*supported: Gemma3ForCausalLM") as e:
        write_gguf(other, tmp_path / "m.gguf")
    assert "convert_hf_to_gguf.py" in (e.value.hint or "")


def test_cli_token_embedding_type_is_written_and_recorded(g3_readable_dir, tmp_path, capsys):
    out = tmp_path / "exp"
    rc = main(["-q", "export", str(g3_readable_dir), "--output", str(out), "--token-embedding-type", "f16"])
    assert rc == 0, capsys.readouterr().err
    manifest = json.loads((out / "ragtune_export.json").read_text())
    assert manifest["quant"] == "q8_0" and manifest["token_embedding_type"] == "f16"
    types = {t.name: t.tensor_type.name for t in _reader(out / "model-q8_0.gguf").tensors}
    assert types["token_embd.weight"] == "F16" and types["blk.0.attn_q.weight"] == "Q8_0"
    rc = main(["-q", "export", str(g3_readable_dir), "--output", str(tmp_path / "bad"), "--token-embedding-type", "q4_0"])
    err = capsys.readouterr().err
    assert rc != 0 and "token-embedding-type" in err and "q4_0" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_cli_export_writes_manifest_tokenizer_and_modelfile(g3_readable_dir, tmp_path, capsys):
    out = tmp_path / "exp"
    rc = main(["-q", "export", str(g3_readable_dir), "--output", str(out), "--quant", "f16", "--ollama"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "model-f16.gguf", "ragtune_export.json", "tokenizer"]
    manifest = json.loads((out / "ragtune_export.json").read_text())
    assert manifest["quant"] == "f16" and manifest["mode"] == "merged" and manifest["adapter_file"] is None
    # EOS, then the plain template's own markers (so an Ollama answer stops where ragtune's does)
    assert manifest["eos_token_ids"] == [2]
    assert manifest["stop_tokens"] == ["<eos>", "\n### Instruction:", "### Response:", "\n\n### "]
    from ragtune.core.io import sha256_file

    for rel, info in manifest["files"].items():
        assert sha256_file(out / rel) == info["sha256"]
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.splitlines()[0] == "FROM ./model-f16.gguf"
    # the plain template (no chat template), derived from ragtune's prompt builder
    assert ('TEMPLATE """{{ if .System }}{{ .System }}\n\n### Instruction:\n{{ .Prompt }}\n\n### Response:\n'
            '{{ else }}### Instruction:\n{{ .Prompt }}\n\n### Response:\n{{ end }}"""') in modelfile
    assert 'PARAMETER stop "<eos>"' in modelfile and "PARAMETER temperature 0" in modelfile
    assert 'PARAMETER stop "### Response:"' in modelfile
    assert "PARAMETER num_ctx 1024" in modelfile
    assert "exported" in capsys.readouterr().out


def test_modelfile_template_for_a_chat_model_and_system_prompt(tmp_path):
    from transformers import AutoTokenizer

    from ragtune.core.prompt import PromptConfig
    from ragtune.export.ollama import modelfile

    from ..conftest import CHATML_TEMPLATE
    from .fixtures import make_exportable_llm

    path = make_exportable_llm(tmp_path / "chat", chat_template=CHATML_TEMPLATE)
    tok = AutoTokenizer.from_pretrained(path)
    text = modelfile("m.gguf", tokenizer=tok, prompt=PromptConfig(system="Answer in JSON."), stop=["<eos>"],
                     adapter_file="a.gguf")
    assert text.splitlines()[:2] == ["FROM ./m.gguf", "ADAPTER ./a.gguf"]
    assert ('TEMPLATE """{{ if .System }}<|system|>\n{{ .System }}<eos>\n<|user|>\n{{ .Prompt }}<eos>\n'
            '<|assistant|>\n{{ else }}<|user|>\n{{ .Prompt }}<eos>\n<|assistant|>\n{{ end }}"""') in text
    assert 'SYSTEM """Answer in JSON."""' in text


def test_export_lora_without_an_adapter_is_a_clear_error(g3_readable_dir, tmp_path, capsys):
    rc = main(["export", str(g3_readable_dir), "--output", str(tmp_path / "x"), "--lora"])
    assert rc == 1
    assert "has no LoRA adapter to keep separate" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_lora_export_layout(g3_lora_run, tmp_path):
    from ragtune.export.job import ExportConfig

    res = ExportConfig(model=str(g3_lora_run), output=str(tmp_path / "lora"), quant="f32", lora=True).execute()
    assert res.adapter_file is not None and res.manifest["mode"] == "lora"
    reader = _reader(res.adapter_file)
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == 8.0
    names = {t.name: [int(d) for d in t.shape] for t in reader.tensors}
    assert len(names) == 3 * 7 * 2  # 3 layers x (q, k, v, o, gate, up, down) x (a, b)
    assert names["blk.0.attn_q.weight.lora_a"] == [64, 4]     # ggml order: (in, rank)
    assert names["blk.0.attn_q.weight.lora_b"] == [4, 64]     # (rank, out = 4 heads x 16)
    assert names["blk.2.ffn_down.weight.lora_a"] == [128, 4]


def test_lora_refuses_what_a_gguf_lora_cannot_hold(g3_lora_run, tmp_path):
    import shutil

    from ragtune.export.lora import write_lora_gguf

    bad = shutil.copytree(g3_lora_run / "adapter", tmp_path / "dora")
    cfg = json.loads((bad / "adapter_config.json").read_text())
    cfg["use_dora"] = True
    cfg["modules_to_save"] = ["lm_head"]
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError, match="DoRA.*modules_to_save") as e:
        write_lora_gguf(bad, g3_lora_run / "merged", tmp_path / "a.gguf")
    assert "merged" in (e.value.hint or "")
