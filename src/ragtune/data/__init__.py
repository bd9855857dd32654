"""Data preparation: read, detect, validate and convert instruction data; build eval sets, embedding
training sets (random and mined hard negatives) and JSON-repair augmentations.

Everything here imports only the standard library, pydantic and ragtune at import time; numpy,
pyarrow, transformers and sentence-transformers load inside the functions that need them.
"""
from .augment import AugmentJsonConfig, augment_json, corrupt_json
from .beir import read_beir, to_beir, write_beir
from .convert import convert, reformat
from .embed_pairs import DEFAULT_INSTRUCTION, EmbedPairsConfig, embed_pairs, split_indices
from .formats import (
                      alpaca_to_messages,
                      convert_record,
                      detect_format,
                      detect_record_format,
                      messages_to_alpaca,
                      normalize_alpaca,
                      to_messages,
)
from .mining import MineNegativesConfig, mine_negatives
from .readers import Record, read_records, read_rows
from .squad import DEFAULT_TEMPLATE, TEMPLATES, evalset, fill_template, resolve_template, squad_to_alpaca
from .summary import Summary
from .validate import ERROR_KINDS, Issue, ValidationReport, plot_lengths, validate, validate_path_or_raise

__all__ = [
    "AugmentJsonConfig", "DEFAULT_INSTRUCTION", "DEFAULT_TEMPLATE", "ERROR_KINDS", "EmbedPairsConfig",
    "Issue", "MineNegativesConfig", "Record", "Summary", "TEMPLATES", "ValidationReport",
    "alpaca_to_messages", "augment_json", "convert", "convert_record", "corrupt_json", "detect_format",
    "detect_record_format", "embed_pairs", "evalset", "fill_template", "messages_to_alpaca",
    "mine_negatives", "normalize_alpaca", "plot_lengths", "read_beir", "read_records", "read_rows", "reformat", "resolve_template",
    "split_indices", "squad_to_alpaca", "to_beir", "to_messages", "validate", "validate_path_or_raise", "write_beir",
]
