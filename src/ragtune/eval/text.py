"""Text helpers shared by the metrics: CJK detection, normalisation, word and sentence splitting."""
from __future__ import annotations

import re
import unicodedata
from typing import Literal

WordTokenizer = Literal["auto", "jieba", "char", "whitespace"]

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text or ""))


def is_punct_or_space(token: str) -> bool:
    """True for tokens made only of whitespace and punctuation/symbols (ASCII and CJK alike)."""
    return all(ch.isspace() or unicodedata.category(ch)[0] in "PS" for ch in token)


def normalize_answer(text: str) -> str:
    """Lenient form for exact match: NFKC (full-width -> half-width), lower case, and all
    whitespace and punctuation removed, Chinese punctuation included (，。“”《》、 ...)."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    return "".join(ch for ch in text if not (ch.isspace() or unicodedata.category(ch)[0] in "PS"))


def split_words(text: str, tokenizer: WordTokenizer = "auto") -> list[str]:
    """Words of ``text`` without whitespace/punctuation tokens.

    - ``jieba``: Chinese word segmentation (mixed text keeps latin words whole);
    - ``char``: every non-space character on its own (robust for Chinese, no dictionary);
    - ``whitespace``: ``str.split`` (space-separated languages), punctuation stripped from the ends;
    - ``auto``: jieba when the text contains CJK, else whitespace.
    """
    text = text or ""
    if tokenizer == "auto":
        tokenizer = "jieba" if has_cjk(text) else "whitespace"
    if tokenizer == "jieba":
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)
        tokens = jieba.lcut(text)
    elif tokenizer == "char":
        tokens = list(text)
    elif tokenizer == "whitespace":
        tokens = [_strip_punct(t) for t in text.split()]
    else:
        from ..core.errors import ConfigError

        raise ConfigError(f"unknown word tokenizer '{tokenizer}'. Valid: auto, jieba, char, whitespace")
    return [t for t in tokens if t and not is_punct_or_space(t)]


def _strip_punct(token: str) -> str:
    start, end = 0, len(token)
    while start < end and is_punct_or_space(token[start]):
        start += 1
    while end > start and is_punct_or_space(token[end - 1]):
        end -= 1
    return token[start:end]


# Sentence ends: Chinese 。！？； (no space needed after them) and English .!? followed by space.
_ZH_SENT = re.compile(r"(?<=[。！？；!?])")
_EN_SENT = re.compile(r"(?<=[.!?;])\s+")


def split_sentences(text: str, lang: Literal["auto", "zh", "en"] = "auto") -> list[str]:
    """Split into stripped, non-empty sentences. ``auto`` picks zh when the text has CJK.
    zh splits after 。！？； (and ! ?), en after .!?; followed by whitespace (so "3.5" stays whole);
    newlines always end a sentence."""
    if lang == "auto":
        lang = "zh" if has_cjk(text) else "en"
    if lang not in ("zh", "en"):
        from ..core.errors import ConfigError

        raise ConfigError(f"unknown sentence splitter language '{lang}'. Valid: auto, zh, en")
    pattern = _ZH_SENT if lang == "zh" else _EN_SENT
    out: list[str] = []
    for line in (text or "").splitlines():
        out.extend(s.strip() for s in pattern.split(line))
    return [s for s in out if s and not is_punct_or_space(s)]
