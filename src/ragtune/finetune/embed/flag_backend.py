"""FlagEmbedding backend (optional extra): run BAAI's trainer under torchrun from the same config.

The command is built here and unit-tested; the run streams its output into ``train.log`` and a
non-zero exit raises :class:`BackendError` with the log tail (no ``tee`` that would hide the code).
"""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ...core.errors import BackendError
from ...core.io import atomic_write_jsonl
from ...core.log import get_logger
from ...data.embed_sets import TrainRecord
from .config import EmbedFinetuneConfig
from .data import training_rows

log = get_logger(__name__)
MODULE = "FlagEmbedding.finetune.embedder.encoder_only.base"
_ERROR_LINE = re.compile(r"^\s*(\[rank\d+\]:\s*)?[\w.]*(Error|Exception)\b.*")


def torchrun_prefix(nproc_per_node: int) -> list[str]:
    exe = shutil.which("torchrun")
    base = [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]
    return base + ["--nproc_per_node", str(nproc_per_node)]


def _transformers_major() -> int:
    from importlib.metadata import version

    return int(version("transformers").split(".")[0])


def detect_pooling(model_path: str | Path) -> str:
    """The pooling a sentence-transformers folder already uses (its Pooling module config);
    ``cls`` otherwise, FlagEmbedding's default for bge models."""
    import json

    try:
        modules = json.loads((Path(model_path) / "modules.json").read_text(encoding="utf-8"))
        pooling_dir = next(m["path"] for m in modules if m.get("type", "").endswith("Pooling"))
        conf = json.loads((Path(model_path) / pooling_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, StopIteration, KeyError, ValueError):
        return "cls"
    mode = conf.get("pooling_mode")  # sentence-transformers >= 6; older: pooling_mode_*_tokens flags
    if mode in ("mean", "cls", "lasttoken"):
        return {"lasttoken": "last_token"}.get(mode, mode)
    if conf.get("pooling_mode_mean_tokens"):
        return "mean"
    if conf.get("pooling_mode_lasttoken"):
        return "last_token"
    return "cls"


def build_command(cfg: EmbedFinetuneConfig, model_path: str, train_file: str, output_dir: str,
                  instruction: str, bf16: bool = False, transformers_major: int | None = None) -> list[str]:
    """argv for ``torchrun ... -m FlagEmbedding.finetune.embedder.encoder_only.base`` (argument
    names from FlagEmbedding 1.4 AbsEmbedder{Model,Data,Training}Arguments + transformers'
    TrainingArguments, whose v5 dropped --warmup_ratio (a float --warmup_steps is a ratio) and
    --overwrite_output_dir)."""
    major = transformers_major if transformers_major is not None else _transformers_major()
    warmup = ["--warmup_steps" if major >= 5 else "--warmup_ratio", str(cfg.warmup_ratio)]
    cmd = torchrun_prefix(cfg.nproc_per_node) + [
        "-m", MODULE,
        "--model_name_or_path", model_path,
        "--train_data", train_file,
        "--output_dir", output_dir,
        "--train_group_size", str(cfg.train_group_size),
        "--query_max_len", str(cfg.query_max_len),
        "--passage_max_len", str(cfg.passage_max_len),
        "--learning_rate", str(cfg.learning_rate),
        "--num_train_epochs", str(cfg.num_train_epochs),
        "--per_device_train_batch_size", str(cfg.per_device_train_batch_size),
        *warmup,
        "--temperature", str(cfg.temperature),
        "--sentence_pooling_method", cfg.pooling if cfg.pooling != "auto" else detect_pooling(model_path),
        "--normalize_embeddings", "True",
        "--seed", str(cfg.seed),
        "--logging_steps", str(cfg.logging_steps),
        "--save_strategy", "no",
        "--report_to", "none",
    ]
    if instruction:
        cmd += ["--query_instruction_for_retrieval", instruction, "--query_instruction_format", "{}{}"]
    if bf16:
        cmd += ["--bf16"]
    return cmd


def write_train_file(records: list[TrainRecord], n_neg: int, seed: int, path: Path) -> Path:
    """FlagEmbedding needs >= 1 negative per record: fill like the sentence-transformers path."""
    cols = training_rows(records, max(n_neg, 1), seed)
    negs = [k for k in cols if k.startswith("neg_")]
    rows = ({"query": q, "pos": [p], "neg": [cols[k][i] for k in negs]}
            for i, (q, p) in enumerate(zip(cols["query"], cols["pos"])))
    return atomic_write_jsonl(path, rows)


def run_logged(cmd: list[str], log_path: Path, tail_lines: int = 40) -> None:
    """Run ``cmd`` with stdout+stderr into ``log_path``; raise with the tail when it fails."""
    log.info("running: %s", " ".join(cmd))
    with open(log_path, "w", encoding="utf-8") as fh:
        try:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
        except FileNotFoundError as exc:
            raise BackendError(f"cannot start {cmd[0]}: {exc}") from None
    if proc.returncode != 0:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        tail = "\n".join(lines[-tail_lines:])
        # torchrun ends with its own summary; the child's exception is further up: show it too
        errors = [ln for ln in lines[:-tail_lines] if _ERROR_LINE.match(ln)]
        cause = ("\nerrors raised earlier in the log:\n" + "\n".join(errors[-3:])) if errors else ""
        raise BackendError(f"FlagEmbedding training failed with exit code {proc.returncode} "
                           f"(full log: {log_path}){cause}\nlast lines:\n{tail}")


def require_flagembedding() -> None:
    if importlib.util.find_spec("FlagEmbedding") is None:
        raise BackendError("the flagembedding backend needs the FlagEmbedding package",
                           hint="pip install FlagEmbedding (or use backend=sentence_transformers)")


def train_flagembedding(cfg: EmbedFinetuneConfig, model_path: str, records: list[TrainRecord],
                        instruction: str, workdir: Path, bf16: bool) -> Path:
    """Run the trainer; return the HF model dir it wrote."""
    require_flagembedding()
    train_file = write_train_file(records, cfg.train_group_size - 1, cfg.seed, workdir / "fe_train.jsonl")
    out = workdir / "fe_model"
    # The log lives next to the output (not inside the temp dir) so it survives a failed run.
    assert cfg.output is not None   # require_paths() checked it
    log_path = Path(cfg.output).with_name(Path(cfg.output).name + ".train.log")
    run_logged(build_command(cfg, model_path, str(train_file), str(out), instruction, bf16), log_path)
    shutil.move(str(log_path), workdir / "train.log")
    return out


def as_sentence_transformer(hf_dir: Path, pooling: str, max_len: int):
    """Wrap the plain HF encoder FlagEmbedding saves with the pooling it was trained with."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as st_models  # type: ignore[attr-defined]  # a lazy shim in >= 6

    transformer = st_models.Transformer(str(hf_dir), max_seq_length=max_len)
    dim = (getattr(transformer, "get_embedding_dimension", None) or transformer.get_word_embedding_dimension)()
    mode = {"cls": "cls", "mean": "mean", "last_token": "lasttoken"}[pooling]
    from ...models.loading import resolve_device

    return SentenceTransformer(modules=[transformer, st_models.Pooling(dim, pooling_mode=mode),
                                        st_models.Normalize()], device=resolve_device(None))
