"""Built-in node transforms: text -> list of chunks. Any ``callable(str) -> list[str]`` works too."""
from __future__ import annotations

import re
from collections.abc import Callable

# Sentence ends: Chinese 。！？； (and full-width ！？), English .!? followed by space, and newlines.
_SENT_END = re.compile(r"(?<=[。！？；!?])|(?<=[.])(?=\s)|\n+")


class LineSplitter:
    """One chunk per non-empty line (the chapter's ``lambda s: s.split('\\n')``, minus empty lines)."""

    def __call__(self, text: str) -> list[str]:
        return [line.strip() for line in text.split("\n") if line.strip()]


class SentenceSplitter:
    """Sentences, Chinese punctuation included; ``max_chars`` packs short sentences together."""

    def __init__(self, max_chars: int = 0):
        self.max_chars = max_chars

    def __call__(self, text: str) -> list[str]:
        sents = [s.strip() for s in _SENT_END.split(text) if s and s.strip()]
        if self.max_chars <= 0:
            return sents
        out: list[str] = []
        for s in sents:
            if out and len(out[-1]) + len(s) + 1 <= self.max_chars:
                joiner = "" if ord(out[-1][-1]) >= 0x2E80 or ord(s[0]) >= 0x2E80 else " "  # CJK: no spaces
                out[-1] = out[-1] + joiner + s
            else:
                out.append(s)
        return out


class TokenSplitter:
    """Windows of ``chunk_size`` tokens overlapping by ``overlap`` tokens.

    ``tokenizer``: a transformers tokenizer or model dir (chunks then match what the embedder
    sees); default: words, with Chinese cut by jieba."""

    def __init__(self, chunk_size: int = 256, overlap: int = 32, tokenizer=None):
        if chunk_size < 1 or not 0 <= overlap < chunk_size:
            from ..core.errors import ConfigError

            raise ConfigError(f"TokenSplitter needs chunk_size >= 1 and 0 <= overlap < chunk_size, "
                              f"got chunk_size={chunk_size}, overlap={overlap}")
        self.chunk_size, self.overlap = chunk_size, overlap
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.tokenizer = tokenizer

    def _pieces(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character spans of the tokens, so chunks are exact substrings."""
        if self.tokenizer is not None:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            return [tuple(o) for o in enc["offset_mapping"]]
        import jieba

        spans, pos = [], 0
        for word in jieba.cut(text):
            if word.strip():
                spans.append((pos, pos + len(word)))
            pos += len(word)
        return spans

    def __call__(self, text: str) -> list[str]:
        spans = self._pieces(text)
        step = self.chunk_size - self.overlap
        out = []
        for i in range(0, max(len(spans), 1), step):
            window = spans[i:i + self.chunk_size]
            if not window:
                break
            out.append(text[window[0][0]:window[-1][1]].strip())
            if i + self.chunk_size >= len(spans):
                break
        return [c for c in out if c]


SPLITTERS: dict[str, Callable[..., Callable[[str], list[str]]]] = {
    "line": LineSplitter, "sentence": SentenceSplitter, "token": TokenSplitter}
