"""Evaluation: task metrics (exact, cosine, origin), retrieval metrics (context recall/relevance,
recall@k, MRR@k, NDCG@k), LLM-judged metrics (faithfulness, answer relevance), reports.

Importing this package never imports torch: embedders are loaded on first use.
"""
from .base import (
                   METRICS,
                   Aggregate,
                   EvalItem,
                   Metric,
                   MetricResult,
                   aggregate,
                   get_metric,
                   list_metrics,
                   register_metric,
)
from .generation import CosineSimilarity, ExactMatch, LenientExactMatch, OriginScore, clamped_cosine
from .judge import AnswerRelevance, Faithfulness, Judge, JudgeOutputError, parse_json_answer
from .retrieval import (
                   ContextRecall,
                   ContextRelevance,
                   context_recall,
                   context_relevance,
                   levenshtein_similarity,
                   mrr_at_k,
                   ndcg_at_k,
                   recall_at_k,
                   recalled_references,
)
from .text import has_cjk, normalize_answer, split_sentences, split_words

__all__ = [
    "METRICS", "Aggregate", "EvalItem", "Metric", "MetricResult", "aggregate", "get_metric", "list_metrics",
    "register_metric", "CosineSimilarity", "ExactMatch", "LenientExactMatch", "OriginScore",
    "clamped_cosine", "ContextRecall", "ContextRelevance", "context_recall", "context_relevance",
    "levenshtein_similarity", "mrr_at_k", "ndcg_at_k", "recall_at_k", "recalled_references", "has_cjk",
    "normalize_answer", "split_sentences", "split_words", "AnswerRelevance", "Faithfulness", "Judge",
    "JudgeOutputError", "parse_json_answer",
]
