"""Model registry: bundled defaults, local directories and Hugging Face ids."""
from .bundled import BUNDLED, BundledModel, find_bundled
from .registry import ModelInfo, ResolvedModel, detect_kind, list_models, pull_model, resolve_model, verify_materialised

__all__ = ["BUNDLED", "BundledModel", "ModelInfo", "ResolvedModel", "detect_kind", "find_bundled",
           "list_models", "pull_model", "resolve_model", "verify_materialised"]
