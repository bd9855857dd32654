"""``ragtune export``: a fine-tune (or any supported model) -> a GGUF folder llama.cpp and Ollama load.

Output folder::

    model-<quant>.gguf     the model (merged fine-tune), or the base model with --lora
    adapter-f32.gguf       --lora only: the LoRA adapter as a GGUF LoRA
    tokenizer/             the HF tokenizer: ragtune's llamacpp engine builds prompts with it, so an
                           exported model sees byte-for-byte the prompt format it was trained on
    Modelfile              --ollama: ``ollama create NAME -f DIR/Modelfile``
    ragtune_export.json    what was exported from what, prompt settings, stop tokens, file checksums

The folder is built under a temporary name and renamed when complete.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..core.config import Config
from ..core.errors import ConfigError
from ..core.log import get_logger
from ..core.prompt import PromptConfig
from ..engine.llamacpp import EXPORT_MANIFEST
from .gguf import EmbeddingType, ExportError, Quant, read_config, write_gguf

log = get_logger(__name__)


class ExportConfig(Config):
    """``ragtune export`` = ``rt.export(...)``: what to export, to which format and quantisation."""

    model: str = Field(description="Fine-tune output DIR (its merged/ or base + adapter/), DIR/merged, a model dir or a bundled name.")
    adapter: str | None = Field(None, description="PEFT (LoRA) adapter dir over --model.")
    output: str = Field(description="Output folder (replaced atomically when it exists).")
    format: Literal["gguf"] = Field("gguf", description="Export format (gguf: llama.cpp, Ollama, LM Studio).")
    quant: Quant = Field("q8_0", description="Weight type: f16, q8_0 (numpy quantiser), q4_k_m (llama.cpp's), f32.")
    token_embedding_type: EmbeddingType | None = Field(None, description="Type of the token embedding (for tied models such as gemma also the output layer) when it should differ from --quant, as llama-quantize --token-embedding-type; default: --quant's.")
    lora: bool = Field(False, description="Keep the LoRA separate: base GGUF + GGUF LoRA adapter, instead of merged weights.")
    ollama: bool = Field(False, description="Also write an Ollama Modelfile (template, stop tokens, parameters).")
    name: str | None = Field(None, description="Model name in the GGUF metadata (default: the source folder's name).")
    num_ctx: int | None = Field(None, ge=16, description="Context size the Modelfile asks Ollama for (default: min(model's, 4096)).")
    threads: int | None = Field(None, ge=1, description="Threads for llama.cpp's quantiser (q4_k_m).")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="Prompt settings over the fine-tune manifest's (recorded, and used for the Modelfile).")

    def execute(self) -> ExportResult:
        return export_model(self)


@dataclass
class ExportResult:
    output: Path
    model_file: Path
    adapter_file: Path | None
    manifest: dict[str, Any]


def _merge(base_dir: Path, adapter: Path, target: Path) -> Path:
    """Base + LoRA merged by peft in fp32 (the export then rounds once, to the requested type)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    log.info("merging %s into %s (fp32)", adapter, base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.save_pretrained(target, safe_serialization=True)
    return target


def eos_token_ids(tokenizer: Any, model_dir: Path) -> list[int]:
    """The end-of-sequence ids a server must stop on: the builtin engine's rule (config,
    generation config, tokenizer EOS, the chat end-of-turn tokens)."""
    ids: set[int] = set()
    for name in ("generation_config.json", "config.json"):
        path = model_dir / name
        if path.exists():
            value = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
            if value is not None:
                ids.update(value if isinstance(value, list) else [value])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    for token in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>"):
        if token in vocab:
            ids.add(vocab[token])
    return sorted(int(i) for i in ids)


def _files(directory: Path) -> dict[str, Any]:
    from ..core.io import sha256_file

    return {p.relative_to(directory).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != EXPORT_MANIFEST}


def _source(cfg: ExportConfig):
    from ..models import resolve_model
    from ..models.source import FINETUNE_MANIFEST, resolve_source

    adapter = cfg.adapter
    run = Path(cfg.model)
    if cfg.lora and adapter is None and (run / FINETUNE_MANIFEST).exists() and (run / "adapter").is_dir():
        adapter = str(run / "adapter")  # --lora on a fine-tune output: its base + adapter/, not merged/
    source = resolve_source(cfg.model, adapter, cfg.name)
    resolved = resolve_model(source.model, kind="llm")
    if resolved.gguf_file:
        raise ConfigError(f"{cfg.model} is already a GGUF ({resolved.gguf_file}); nothing to export",
                          hint="serve it directly: ragtune serve --engine llamacpp --model FILE.gguf")
    if resolved.kind != "llm":
        raise ConfigError(f"{cfg.model} is an embedding model; GGUF export is for LLMs")
    return source, Path(resolved.path)


def export_model(cfg: ExportConfig) -> ExportResult:
    """Export per ``cfg`` (see the module docs); returns the written paths and the manifest."""
    import tempfile

    from transformers import AutoTokenizer

    from ..core.io import atomic_dir, atomic_write_json, atomic_write_text

    started = time.time()
    source, base_dir = _source(cfg)
    read_config(base_dir)  # a clear error before any work when it is not an HF model dir
    if cfg.lora and source.adapter is None:
        raise ConfigError(f"--lora: {cfg.model} has no LoRA adapter to keep separate (only merged weights)",
                          hint="drop --lora, or pass --adapter DIR")
    from ..core.prompt import resolve_prompt

    prompt = resolve_prompt(cfg.prompt, source.trained_prompt(), f"export, {cfg.model}")
    name = cfg.name or source.name
    model_file = f"model-{cfg.quant}.gguf"
    adapter_file = "adapter-f32.gguf" if cfg.lora else None
    with atomic_dir(Path(cfg.output)) as tmp, tempfile.TemporaryDirectory(dir=tmp.parent) as scratch:
        if source.adapter is not None and not cfg.lora:
            weights_dir = _merge(base_dir, source.adapter, Path(scratch) / "merged")
        else:
            weights_dir = base_dir
        tok_dir = source.adapter if source.adapter is not None and (source.adapter / "tokenizer_config.json").exists() \
            else weights_dir if (weights_dir / "tokenizer_config.json").exists() else base_dir
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        _copy_config_files(base_dir, weights_dir)
        write_gguf(weights_dir, tmp / model_file, cfg.quant, name=name, threads=cfg.threads,
                   chat_template=getattr(tokenizer, "chat_template", None) or None,
                   token_embedding_type=cfg.token_embedding_type)
        if adapter_file:
            from .lora import write_lora_gguf

            write_lora_gguf(source.adapter, base_dir, tmp / adapter_file, name=f"{name}-lora")
        tokenizer.save_pretrained(tmp / "tokenizer")
        eos = eos_token_ids(tokenizer, base_dir)
        stop: list[str] = [tokenizer.convert_ids_to_tokens(i) for i in eos]  # type: ignore[misc]  # transformers: int -> str
        from ..core.prompt import merge_stops, template_stops

        stop = list(merge_stops(stop, template_stops(tokenizer, prompt)))   # a plain/named template's markers
        model_cfg = read_config(base_dir)
        num_ctx = cfg.num_ctx or min(int(model_cfg.get("max_position_embeddings", 4096)), 4096)
        if cfg.ollama:
            from .ollama import modelfile

            atomic_write_text(tmp / "Modelfile", modelfile(model_file, tokenizer=tokenizer, prompt=prompt,
                                                            stop=stop, adapter_file=adapter_file, num_ctx=num_ctx))
        manifest = {
            "format": "gguf", "quant": cfg.quant, "token_embedding_type": cfg.token_embedding_type,  # null: the quant's own rule
            "mode": "lora" if cfg.lora else "merged",
            "model_file": model_file, "adapter_file": adapter_file, "tokenizer": "tokenizer",
            "name": name, "source": str(cfg.model), "adapter": str(source.adapter) if source.adapter else None,
            "base_model_path": str(base_dir), "prompt": prompt.model_dump(mode="json"),
            "eos_token_ids": eos, "stop_tokens": stop, "context_length": int(model_cfg.get("max_position_embeddings", 0)),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.time() - started, 1),
            "files": _files(tmp),
        }
        atomic_write_json(tmp / EXPORT_MANIFEST, manifest)
    out = Path(cfg.output)
    log.info("exported %s -> %s in %.0fs", cfg.model, out, time.time() - started)
    return ExportResult(out, out / model_file, out / adapter_file if adapter_file else None, manifest)


def _copy_config_files(base_dir: Path, weights_dir: Path) -> None:
    """A merged checkpoint saved by peft has config.json; generation_config.json may be missing."""
    import shutil

    if weights_dir == base_dir:
        return
    for name in ("generation_config.json",):
        if (base_dir / name).exists() and not (weights_dir / name).exists():
            shutil.copy2(base_dir / name, weights_dir / name)


def check_export_source(cfg: ExportConfig) -> None:
    """Validate the source before a long run (used by the CLI): resolves it and checks the
    architecture is exportable."""
    from .gguf import arch_of

    _, base_dir = _source(cfg)
    arch_of(read_config(base_dir), base_dir)


__all__ = ["ExportConfig", "ExportError", "ExportResult", "eos_token_ids", "export_model"]
