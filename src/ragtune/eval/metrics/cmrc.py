"""The official span-extraction metrics: CMRC2018 EM / F1 (Chinese, mixed with English) and SQuAD
EM / F1 (English), each the best over all reference answers of an item, as the official scripts do.

CMRC2018 (port of the official ``cmrc2018_evaluate.py`` v5, Python 2):
- text is lower-cased and stripped; EM compares the texts with the script's punctuation list
  removed (only that list: ASCII ``,.!?`` stay, as in the script, and the two-character ``……`` entry
  never matches a single ``…``, as in the script);
- F1 segments both texts: every CJK character (U+4E00..U+9FA5) and every listed punctuation mark is
  a segment, other runs are word-tokenized; F1 is computed from the longest common *contiguous*
  run of segments (not a bag of words).
- One replacement: the script's ``nltk.word_tokenize`` needs nltk's punkt model, a download
  that an offline machine cannot make. It is replaced by a regular expression that splits a run
  into words (numbers like ``3.5`` or ``1,000`` kept whole) and single punctuation marks, which is
  what word_tokenize does on the short English runs of CMRC answers; tests pin the cases.

SQuAD v1.1: lower-case, drop ASCII punctuation and the articles a/an/the, split on whitespace;
F1 over the bag of tokens.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import ClassVar

from ..base import EvalItem, Metric, MetricResult, register_metric

CMRC_PUNCT = ['-', ':', '_', '*', '^', '/', '\\', '~', '`', '+', '=',
              '，', '。', '：', '？', '！', '“', '”', '；', '’', '《', '》', '……', '·', '、',
              '「', '」', '（', '）', '－', '～', '『', '』']
_CJK = re.compile(r"[\u4e00-\u9fa5]")
# word_tokenize stand-in: words/numbers (with inner . or , between digits or letters), else one mark
_WORD_OR_MARK = re.compile(r"\w+(?:[.,'’]\w+)*|[^\w\s]", re.UNICODE)


def _word_tokenize(text: str) -> list[str]:
    return _WORD_OR_MARK.findall(text)


def cmrc_segments(text: str, remove_punct: bool = False) -> list[str]:
    """The official ``mixed_segmentation``."""
    out: list[str] = []
    run = ""
    for char in str(text).lower().strip():
        if remove_punct and char in CMRC_PUNCT:
            continue
        if _CJK.match(char) or char in CMRC_PUNCT:
            if run:
                out.extend(_word_tokenize(run))
                run = ""
            out.append(char)
        else:
            run += char
    if run:
        out.extend(_word_tokenize(run))
    return out


def cmrc_strip_punct(text: str) -> str:
    """The official ``remove_punctuation``."""
    return "".join(c for c in str(text).lower().strip() if c not in CMRC_PUNCT)


def longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common contiguous run of two segment lists (``find_lcs``)."""
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                cur[j + 1] = prev[j] + 1
                best = max(best, cur[j + 1])
        prev = cur
    return best


def cmrc_f1(prediction: str, answers: Sequence[str]) -> float:
    pred = cmrc_segments(prediction, remove_punct=True)
    scores = []
    for ans in answers:
        gold = cmrc_segments(ans, remove_punct=True)
        common = longest_common_run(gold, pred)
        if common == 0:
            scores.append(0.0)
            continue
        precision, recall = common / len(pred), common / len(gold)
        scores.append(2 * precision * recall / (precision + recall))
    return max(scores) if scores else 0.0


def cmrc_em(prediction: str, answers: Sequence[str]) -> float:
    pred = cmrc_strip_punct(prediction)
    return 1.0 if any(cmrc_strip_punct(a) == pred for a in answers) else 0.0


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def squad_normalize(text: str) -> str:
    text = "".join(c for c in str(text).lower() if c not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_em(prediction: str, answers: Sequence[str]) -> float:
    pred = squad_normalize(prediction)
    return 1.0 if any(squad_normalize(a) == pred for a in answers) else 0.0


def squad_f1(prediction: str, answers: Sequence[str]) -> float:
    pred = squad_normalize(prediction).split()
    best = 0.0
    for ans in answers:
        gold = squad_normalize(ans).split()
        common = sum((Counter(pred) & Counter(gold)).values())
        if common == 0:
            continue
        precision, recall = common / len(pred), common / len(gold)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def references(item: EvalItem) -> list[str]:
    return list(dict.fromkeys(a for a in [item.reference, *item.all_answers] if a and a.strip()))


class _SpanMetric(Metric):
    """Shared scoring of the span metrics below; each sets ``fn`` to its official function."""

    needs = ("prediction", "reference")
    fn: ClassVar["staticmethod[[str, Sequence[str]], float]"]

    def score(self, item: EvalItem) -> MetricResult:
        refs = references(item)
        if not refs:
            return MetricResult.skipped("no reference answer")
        if not (item.prediction or "").strip():
            return MetricResult.ok(0.0, "empty prediction")
        return MetricResult.ok(round(type(self).fn(item.prediction, refs), 6))


@register_metric("cmrc_em")
class CmrcEM(_SpanMetric):
    """The official CMRC2018 exact match (punctuation-insensitive, best over all answers)."""
    title = "CMRC EM"
    kind = "binary"
    fn = staticmethod(cmrc_em)


@register_metric("cmrc_f1")
class CmrcF1(_SpanMetric):
    """The official CMRC2018 F1 (longest common run of mixed segments, best over all answers)."""
    title = "CMRC F1"
    fn = staticmethod(cmrc_f1)


@register_metric("squad_em")
class SquadEM(_SpanMetric):
    """The official SQuAD v1.1 exact match (normalised, best over all answers)."""
    title = "SQuAD EM"
    kind = "binary"
    fn = staticmethod(squad_em)


@register_metric("squad_f1")
class SquadF1(_SpanMetric):
    """The official SQuAD v1.1 token F1 (best over all answers)."""
    title = "SQuAD F1"
    fn = staticmethod(squad_f1)
