"""A Hugging Face causal-LM directory -> one GGUF file that llama.cpp and Ollama load.

The file format, the tensor-name map and the numpy quantisers come from the ``gguf`` package
(llama.cpp's gguf-py); k-quants (``q4_k_m``) come from llama.cpp itself (``llama_model_quantize``
through llama-cpp-python), exactly what ``llama-quantize`` does.

Why not run llama.cpp's ``convert_hf_to_gguf.py``: it is a script of the llama.cpp repository, in
no package (pip installs neither it nor its ``conversion/`` modules), and it is written against
llama.cpp master's gguf-py, not the released one. What it does per architecture is small and is
mirrored here for the architectures ragtune fine-tunes, with a test that llama.cpp gives the same
logits as transformers on the converted file. Two things it cannot do are needed here: take the
tokenizer and metadata from the GGUF a model came from (the bundled gemma-3-270m exists only as a
GGUF, its tokenizer has no ``tokenizer.model``), and refuse what llama.cpp would silently compute
differently (e.g. an attention scale llama.cpp does not read from the file).

Architectures: ``Gemma3ForCausalLM`` (gemma-3 text). Others raise :class:`ExportError` naming the
architecture and what is supported.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from ..core.errors import ConfigError, RagtuneError
from ..core.log import get_logger

log = get_logger(__name__)

Quant = Literal["f32", "f16", "q8_0", "q4_k_m"]
QUANTS: tuple[str, ...] = get_args(Quant)
# types token_embd.weight may be given apart from --quant (llama-quantize --token-embedding-type);
# for a tied model (gemma) it is also the output layer, the one matmul whose rounding every token sees
EmbeddingType = Literal["f32", "f16", "q8_0"]
EMBEDDING_TYPES: tuple[str, ...] = get_args(EmbeddingType)
# general.file_type values (llama.cpp's llama_ftype)
_FILE_TYPE = {"f32": 0, "f16": 1, "q8_0": 7, "q4_k_m": 15}


class ExportError(RagtuneError):
    """A model (or adapter) that cannot be exported faithfully; the message says why."""


# -- reading the HF directory ---------------------------------------------------------------------
def read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.exists():
        raise ExportError(f"{model_dir} has no config.json: not a Hugging Face model directory")
    cfg = json.loads(path.read_text(encoding="utf-8"))
    return cfg.get("text_config", cfg) if cfg.get("model_type") == "gemma3" and "text_config" in cfg else cfg


def iter_safetensors(model_dir: Path) -> Iterator[tuple[str, Any]]:
    """(name, float32 numpy array) for every tensor of the model's safetensors shards."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{model_dir} has no *.safetensors weights",
                          hint="save the model with save_pretrained(..., safe_serialization=True)")
    for file in files:
        with safe_open(str(file), framework="pt") as fh:
            for name in fh.keys():
                yield name, fh.get_tensor(name).float().numpy()


# -- architectures ----------------------------------------------------------------------------------
@dataclass
class Arch:
    """What differs per architecture: the gguf arch, its hyper-parameters, tensor fix-ups."""
    gguf_arch: str
    hparams: Callable[[dict[str, Any]], dict[str, Any]]          # gguf key suffix -> value
    fix_tensor: Callable[[str, Any], Any] = lambda name, data: data  # (hf name, array) -> array
    check: Callable[[dict[str, Any]], None] = lambda cfg: None


def _rope(cfg: dict[str, Any], layer_type: str) -> dict[str, Any]:
    """transformers >= 4.56 writes ``rope_parameters`` per layer type; older configs flat keys."""
    params = cfg.get("rope_parameters") or {}
    if layer_type in params:
        return dict(params[layer_type])
    if layer_type == "sliding_attention":
        return {"rope_theta": cfg.get("rope_local_base_freq", 10000.0), "rope_type": "default"}
    flat = dict(params) if params and "rope_theta" in params else {}
    flat.setdefault("rope_theta", cfg.get("rope_theta", 1_000_000.0))
    scaling = cfg.get("rope_scaling") or {}
    flat.setdefault("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    if "factor" in scaling:
        flat.setdefault("factor", scaling["factor"])
    return flat


def _gemma3_layer_types(cfg: dict[str, Any]) -> list[str]:
    n = int(cfg["num_hidden_layers"])
    types = cfg.get("layer_types")
    if types:
        return list(types)
    pattern = int(cfg.get("sliding_window_pattern", 6))
    return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n)]


def _gemma3_check(cfg: dict[str, Any]) -> None:
    head_dim = int(cfg.get("head_dim", 256))
    scalar = cfg.get("query_pre_attn_scalar", head_dim)
    if int(cfg["num_hidden_layers"]) != 62 and scalar != head_dim:
        raise ExportError(f"this gemma-3 model scales attention by query_pre_attn_scalar={scalar}, but llama.cpp's "
                          f"gemma3 uses 1/sqrt(head_dim={head_dim}) and has no setting for it: the GGUF would "
                          "compute different attention")
    if cfg.get("attn_logit_softcapping") is not None:
        raise ExportError("attention logit soft-capping is not supported by llama.cpp's gemma3")
    if cfg.get("use_bidirectional_attention"):
        raise ExportError("bidirectional (embedding) gemma-3 models are not causal LMs")
    rope = _rope(cfg, "full_attention")
    if rope.get("rope_type", "default") not in ("default", "linear"):
        raise ExportError(f"gemma-3 rope type {rope.get('rope_type')!r} is not supported (default, linear)")


def _gemma3_hparams(cfg: dict[str, Any]) -> dict[str, Any]:
    head_dim = int(cfg.get("head_dim", 256))
    full, local = _rope(cfg, "full_attention"), _rope(cfg, "sliding_attention")
    out: dict[str, Any] = {
        "context_length": int(cfg.get("max_position_embeddings", 131072)),
        "embedding_length": int(cfg["hidden_size"]),
        "block_count": int(cfg["num_hidden_layers"]),
        "feed_forward_length": int(cfg["intermediate_size"]),
        "attention.head_count": int(cfg.get("num_attention_heads", 8)),
        "attention.head_count_kv": int(cfg.get("num_key_value_heads", 4)),
        "attention.key_length": head_dim,
        "attention.value_length": head_dim,
        "attention.layer_norm_rms_epsilon": float(cfg.get("rms_norm_eps", 1e-6)),
        "rope.freq_base": float(full["rope_theta"]),
    }
    if cfg.get("final_logit_softcapping"):
        out["final_logit_softcapping"] = float(cfg["final_logit_softcapping"])
    if full.get("rope_type") == "linear" and full.get("factor"):
        out["rope.scaling.type"] = "linear"
        out["rope.scaling.factor"] = float(full["factor"])
    types = _gemma3_layer_types(cfg)
    if cfg.get("sliding_window") and any(t == "sliding_attention" for t in types):
        out["attention.sliding_window"] = int(cfg["sliding_window"])
        # the per-layer pattern, written out: llama.cpp's default (every 6th layer global) is only
        # right for Google's own checkpoints
        out["attention.sliding_window_pattern"] = [t == "sliding_attention" for t in types]
        out["rope.freq_base_swa"] = float(local["rope_theta"])
    return out


def _gemma3_fix(name: str, data):
    # Gemma3RMSNorm computes x * (1 + w); llama.cpp's norm computes x * w: store 1 + w
    return data + 1.0 if name.endswith("norm.weight") else data


ARCHS: dict[str, Arch] = {
    "Gemma3ForCausalLM": Arch("gemma3", _gemma3_hparams, _gemma3_fix, _gemma3_check),
}


def arch_of(cfg: dict[str, Any], model_dir: Path) -> Arch:
    names = cfg.get("architectures") or []
    for name in names:
        if name in ARCHS:
            arch = ARCHS[name]
            arch.check(cfg)
            return arch
    raise ExportError(f"{model_dir}: architecture {', '.join(names) or '(none in config.json)'} cannot be exported "
                      f"to GGUF by ragtune; supported: {', '.join(ARCHS)}",
                      hint="for other architectures use llama.cpp's convert_hf_to_gguf.py on the merged/ folder")


# -- tokenizer ----------------------------------------------------------------------------------------
@dataclass
class TokenizerSource:
    """Where the GGUF's ``tokenizer.*`` keys come from: copied from a reference GGUF (the model
    the fine-tune started from) or built from the HF ``tokenizer.json``."""
    reference_gguf: Path | None = None
    chat_template: str | None = None
    notes: list[str] = field(default_factory=list)


def _reference_tokens(reader) -> list[str]:
    f = reader.fields["tokenizer.ggml.tokens"]
    return [bytes(f.parts[i]).decode("utf-8", errors="replace") for i in f.data]


def tokenizer_matches_gguf(model_dir: Path, gguf_path: Path) -> bool:
    """Whether the HF tokenizer of ``model_dir`` has exactly the reference GGUF's vocabulary."""
    import gguf
    from tokenizers import Tokenizer

    tok_file = model_dir / "tokenizer.json"
    if not tok_file.exists():
        return False
    reader = gguf.GGUFReader(str(gguf_path))
    if "tokenizer.ggml.tokens" not in reader.fields:
        return False
    ref = _reference_tokens(reader)
    tok = Tokenizer.from_file(str(tok_file))
    if tok.get_vocab_size(with_added_tokens=True) != len(ref):
        return False
    # SentencePiece GGUFs keep a few pieces with literal spaces that the HF conversion writes as U+2581
    return all(tok.id_to_token(i) in (t, t.replace(" ", "\u2581")) for i, t in enumerate(ref))


def bundled_reference(model_dir: Path, cfg: dict[str, Any]) -> Path | None:
    """The bundled gemma-3-270m GGUF when ``model_dir`` derives from it (same vocabulary)."""
    from ..models.bundled import BUNDLED

    gemma = BUNDLED["gemma-3-270m"]
    if not gemma.installed() or cfg.get("vocab_size") != 262144:
        return None
    from ..models.convert import assemble_gguf

    path = assemble_gguf()
    return path if tokenizer_matches_gguf(model_dir, path) else None


def _copy_tokenizer(writer, reference: Path, skip_template: bool = False) -> None:
    """Copy every ``tokenizer.*`` key of the reference GGUF (vocabulary, scores, types, merges,
    special ids, flags, chat template unless ``skip_template``)."""
    import gguf

    reader = gguf.GGUFReader(str(reference))
    for key, f in reader.fields.items():
        if not key.startswith("tokenizer.") or (skip_template and key == "tokenizer.chat_template"):
            continue
        vtype = f.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = f.types[-1]
            if sub == gguf.GGUFValueType.STRING:
                value = [bytes(f.parts[i]) for i in f.data]
            else:
                value = [f.parts[i].tolist()[0] for i in f.data]
            writer.add_key_value(key, value, vtype, sub_type=sub)
        else:
            writer.add_key_value(key, f.contents(), vtype)


# BPE pre-tokenizer regexes llama.cpp knows (llama-vocab.cpp), keyed by its ``tokenizer.ggml.pre``
_GPT2_BYTELEVEL = "gpt-2"


def _bpe_pre(tokenizer_json: dict[str, Any], where: Path) -> str:
    pre = tokenizer_json.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space", False):
        return _GPT2_BYTELEVEL
    raise ExportError(f"{where}: BPE pre-tokenizer {json.dumps(pre)[:200]} is not one ragtune can map to a "
                      "llama.cpp pre-tokenizer (supported: GPT-2 byte-level)",
                      hint="use llama.cpp's convert_hf_to_gguf.py, which identifies more pre-tokenizers by hash")


def _write_hf_tokenizer(writer, model_dir: Path, n_vocab: int) -> None:
    """A byte-level BPE ``tokenizer.json`` (GPT-2 style) -> ``tokenizer.ggml.*`` (model ``gpt2``)."""
    import gguf

    path = model_dir / "tokenizer.json"
    if not path.exists():
        raise ExportError(f"{model_dir} has no tokenizer.json to export",
                          hint="save the tokenizer with save_pretrained next to the weights")
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ExportError(f"{path}: tokenizer model {model.get('type')!r}"
                          f"{' with byte_fallback' if model.get('byte_fallback') else ''} is not supported "
                          "for conversion (supported: byte-level BPE); SentencePiece models need their "
                          "original GGUF or tokenizer.model",
                          hint="models fine-tuned from the bundled gemma-3-270m take the tokenizer from its GGUF")
    pre = _bpe_pre(data, path)
    vocab = model["vocab"]
    added = {t["id"]: t for t in data.get("added_tokens", [])}
    size = max([*vocab.values(), *added]) + 1
    if size > n_vocab:
        raise ExportError(f"{path} has {size} tokens but the model's embedding has {n_vocab} rows")
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [gguf.TokenType.UNUSED] * n_vocab
    for text, i in vocab.items():
        tokens[i], types[i] = text, gguf.TokenType.NORMAL
    for i, t in added.items():
        tokens[i] = t["content"]
        types[i] = gguf.TokenType.CONTROL if t.get("special") else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    special = gguf.SpecialVocab(model_dir, load_merges=False, n_vocab=n_vocab)
    special.add_to_gguf(writer, quiet=True)


# -- tensors --------------------------------------------------------------------------------------------
def _is_quantizable(gguf_name: str, data) -> bool:
    return data.ndim == 2 and not gguf_name.endswith("_norm.weight")


def _encode(data, quant: Quant, gguf_name: str, embedding_type: EmbeddingType | None = None):
    """(array, raw ggml type or None) for one tensor at ``quant`` (q4_k_m: written f32, quantised
    afterwards by llama.cpp, which also applies ``embedding_type`` then)."""
    import numpy as np
    from gguf import GGMLQuantizationType, quants

    if gguf_name == "token_embd.weight" and embedding_type is not None and quant != "q4_k_m":
        quant = embedding_type
    if data.ndim < 2 or not _is_quantizable(gguf_name, data) or quant in ("f32", "q4_k_m"):
        return data.astype(np.float32), None
    if quant == "f16":
        return data.astype(np.float16), None
    if data.shape[-1] % 32 != 0:  # q8_0 blocks are 32 values along a row
        return data.astype(np.float16), None
    return quants.quantize(data.astype(np.float32), GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0


def _tensors(model_dir: Path, cfg: dict[str, Any], arch: Arch) -> Iterator[tuple[str, Any]]:
    import gguf

    n_layers = int(cfg["num_hidden_layers"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.gguf_arch.upper()], n_layers)
    tied = cfg.get("tie_word_embeddings", True)
    for hf_name, data in iter_safetensors(model_dir):
        if hf_name == "lm_head.weight" and tied:
            continue  # llama.cpp reuses token_embd when output.weight is absent
        new = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ExportError(f"{model_dir}: tensor {hf_name} has no GGUF name for {arch.gguf_arch}",
                              hint="the checkpoint has weights this architecture does not expect")
        yield new, arch.fix_tensor(hf_name, data)


# -- writing ----------------------------------------------------------------------------------------
def _add_hparams(writer, arch: Arch, hparams: dict[str, Any]) -> None:
    import gguf

    for suffix, value in hparams.items():
        key = f"{arch.gguf_arch}.{suffix}"
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, list):
            writer.add_key_value(key, value, gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.BOOL
                                 if value and isinstance(value[0], bool) else gguf.GGUFValueType.UINT32)
        else:  # pragma: no cover - a programming error in an Arch table
            raise TypeError(f"hparam {key}: {type(value).__name__}")


def _check_reference_hparams(reference: Path, arch: Arch, hparams: dict[str, Any]) -> None:
    """The reference GGUF must describe the same network (a fine-tune keeps its base's shape)."""
    import gguf

    reader = gguf.GGUFReader(str(reference))
    arch_field = reader.fields.get("general.architecture")
    ref_arch = arch_field.contents() if arch_field is not None else None
    if ref_arch != arch.gguf_arch:
        raise ExportError(f"reference GGUF {reference} is a {ref_arch} model, not {arch.gguf_arch}")
    for suffix in ("embedding_length", "block_count", "feed_forward_length", "attention.head_count",
                   "attention.head_count_kv", "attention.key_length"):
        f = reader.fields.get(f"{arch.gguf_arch}.{suffix}")
        if f is not None and f.contents() != hparams.get(suffix):
            raise ExportError(f"reference GGUF {reference} has {suffix}={f.contents()}, the model {hparams.get(suffix)}")


def write_gguf(model_dir: str | os.PathLike, out_file: str | os.PathLike, quant: Quant = "f16", *,
               name: str | None = None, reference_gguf: str | os.PathLike | None = None,
               chat_template: str | None = None, threads: int | None = None,
               token_embedding_type: EmbeddingType | None = None) -> Path:
    """Convert ``model_dir`` (HF layout: config.json, *.safetensors, tokenizer) into ``out_file``.

    ``reference_gguf``: the GGUF the model derives from; its tokenizer and metadata are copied
    (default: the bundled gemma-3-270m GGUF when the vocabulary matches it). ``chat_template``
    overrides/sets ``tokenizer.chat_template`` (default: the HF tokenizer's, else the reference's).
    ``token_embedding_type``: the type of ``token_embd.weight`` when it should differ from ``quant``
    (llama-quantize's ``--token-embedding-type``). Written under a temporary name and renamed: a killed export leaves no half file."""
    if quant not in QUANTS:
        raise ConfigError(f"unknown quant {quant!r}; valid: {', '.join(QUANTS)}")
    if token_embedding_type is not None and token_embedding_type not in EMBEDDING_TYPES:
        raise ConfigError(f"unknown token embedding type {token_embedding_type!r}; valid: {', '.join(EMBEDDING_TYPES)}")
    model_dir, out_file = Path(model_dir), Path(out_file)
    started = time.time()
    cfg = read_config(model_dir)
    arch = arch_of(cfg, model_dir)
    hparams = arch.hparams(cfg)
    reference = Path(reference_gguf) if reference_gguf else bundled_reference(model_dir, cfg)
    if reference is not None:
        _check_reference_hparams(reference, arch, hparams)
    template = chat_template if chat_template is not None else _hf_chat_template(model_dir)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.tmp-{os.getpid()}")
    f32 = tmp.with_name(tmp.name + ".f32")
    try:
        count = _write(model_dir, f32 if quant == "q4_k_m" else tmp, cfg, arch, hparams, quant,
                       name or model_dir.name, reference, template, token_embedding_type)
        if quant == "q4_k_m":
            quantize_k(f32, tmp, "q4_k_m", threads=threads, token_embedding_type=token_embedding_type)
        os.replace(tmp, out_file)
    finally:
        tmp.unlink(missing_ok=True)
        f32.unlink(missing_ok=True)
    log.info("wrote %s (%d tensors, %s%s, %.1f MB) in %.0fs", out_file, count, quant,
             f", token_embd {token_embedding_type}" if token_embedding_type else "",
             out_file.stat().st_size / 1e6, time.time() - started)
    return out_file


def _write(model_dir: Path, target: Path, cfg: dict[str, Any], arch: Arch, hparams: dict[str, Any],
           quant: Quant, name: str, reference: Path | None, template: str | None,
           embedding_type: EmbeddingType | None = None) -> int:
    import gguf

    writer = gguf.GGUFWriter(str(target), arch.gguf_arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_file_type(_FILE_TYPE["f32" if quant == "q4_k_m" else quant])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_hparams(writer, arch, hparams)
    if reference is not None:
        log.info("tokenizer and its metadata from %s", reference)
        _copy_tokenizer(writer, reference, skip_template=template is not None)
    else:
        _write_hf_tokenizer(writer, model_dir, int(cfg["vocab_size"]))
    if template:
        writer.add_chat_template(template)
    count = 0
    for gguf_name, data in _tensors(model_dir, cfg, arch):
        array, raw = _encode(data, quant, gguf_name, embedding_type)
        writer.add_tensor(gguf_name, array, raw_dtype=raw)
        count += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return count


def _hf_chat_template(model_dir: Path) -> str | None:
    jinja = model_dir / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text(encoding="utf-8")
    cfg = model_dir / "tokenizer_config.json"
    if cfg.exists():
        value = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
        return value if isinstance(value, str) else None
    return None


def quantize_k(src: Path, dst: Path, quant: str, threads: int | None = None,
               token_embedding_type: EmbeddingType | None = None) -> None:
    """k-quants by llama.cpp's own quantiser (``llama_model_quantize``, as ``llama-quantize``)."""
    try:
        import llama_cpp
    except ImportError:
        raise ExportError(f"--quant {quant} is done by llama.cpp and needs llama-cpp-python",
                          hint="pip install 'ragtune[llamacpp]', or export --quant f16 / q8_0") from None
    ftype = {"q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}[quant]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or max(1, (os.cpu_count() or 1))
    if token_embedding_type is not None:
        params.token_embedding_type = {"f32": llama_cpp.GGML_TYPE_F32, "f16": llama_cpp.GGML_TYPE_F16,
                                       "q8_0": llama_cpp.GGML_TYPE_Q8_0}[token_embedding_type]
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise ExportError(f"llama.cpp could not quantise {src} to {quant} (error {rc})")


def gguf_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Architecture, tensor count, type histogram and size of a GGUF (for manifests and tests)."""
    from collections import Counter

    import gguf

    reader = gguf.GGUFReader(str(path))
    arch = reader.fields["general.architecture"].contents()
    kinds = Counter(t.tensor_type.name for t in reader.tensors)
    return {"architecture": arch, "tensors": len(reader.tensors), "types": dict(sorted(kinds.items())),
            "bytes": Path(path).stat().st_size,
            "params": int(sum(math.prod(int(d) for d in t.shape) for t in reader.tensors))}
