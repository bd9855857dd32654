"""Every metric against hand-computed values."""
from __future__ import annotations

import math

import pytest

from ragtune.core.errors import ConfigError, DataError
from ragtune.eval import (
    EvalItem,
    MetricResult,
    aggregate,
    clamped_cosine,
    context_recall,
    context_relevance,
    get_metric,
    levenshtein_similarity,
    list_metrics,
    mrr_at_k,
    ndcg_at_k,
    normalize_answer,
    recall_at_k,
    split_sentences,
    split_words,
)

ZH_CONTEXT = "北京是中华人民共和国的首都，位于华北平原。"


def item(pred, ref="北京", context=ZH_CONTEXT, all_answers=()):
    return EvalItem(question="中国的首都是哪里？", context=context, reference=ref, prediction=pred,
                    all_answers=list(all_answers))


# -- registry / result ----------------------------------------------------------------------------
def test_registry_lists_all_metrics_and_rejects_unknown_names():
    assert {"exact", "exact_lenient", "cosine", "origin", "context_recall", "context_relevance",
            "faithfulness", "answer_relevance"} <= set(list_metrics())
    with pytest.raises(ConfigError) as exc:
        get_metric("exakt")
    assert "did you mean 'exact'" in str(exc.value) and "origin" in str(exc.value)
    with pytest.raises(ConfigError, match="unknown key 'tokeniser' in metric 'origin'.*did you mean 'tokenizer'"):
        get_metric("origin", tokeniser="char")


def test_metric_result_never_nan_without_reason():
    with pytest.raises(ValueError):
        MetricResult(float("nan"))
    with pytest.raises(ValueError):
        MetricResult(None, "error")
    r = MetricResult.error("judge said nonsense", raw=["x"])
    assert r.to_dict() == {"value": None, "status": "error", "reason": "judge said nonsense", "details": {"raw": ["x"]}}


def test_aggregate_sums_ok_items_and_counts_the_rest():
    agg = aggregate([MetricResult.ok(1), MetricResult.ok(0.5), MetricResult.error("x"), MetricResult.skipped("y")])
    assert (agg.total, agg.mean, agg.n, agg.n_ok, agg.n_error, agg.n_skipped) == (1.5, 0.75, 4, 2, 1, 1)
    assert aggregate([MetricResult.error("x")]).mean is None


# -- exact --------------------------------------------------------------------------------------
def test_exact_strict_strips_but_is_otherwise_strict():
    m = get_metric("exact")
    assert m.score(item(" 北京\n")).value == 1.0
    assert m.score(item("北京。")).value == 0.0
    assert m.score(item("北京市", all_answers=["北京市"])).value == 0.0   # strict ignores all_answers
    empty = m.score(item("  "))
    assert (empty.value, empty.reason) == (0.0, "empty prediction")


def test_exact_lenient_normalises_punctuation_and_accepts_all_answers():
    m = get_metric("exact", lenient=True)
    assert normalize_answer(" 《北京》，\tCity。") == "北京city"
    assert m.score(item("《北京》。")).value == 1.0
    assert m.score(item("北京市", all_answers=["北京", "北京市"])).value == 1.0
    assert m.score(item("Five  Bar!", ref="five bar")).value == 1.0
    assert m.score(item("上海")).value == 0.0
    assert get_metric("exact_lenient").score(item("北京！")).value == 1.0


# -- cosine -------------------------------------------------------------------------------------
def test_clamped_cosine_hand_values():
    assert clamped_cosine([2, 0], [3, 0]) == 1.0
    assert clamped_cosine([1, 0], [0, 1]) == 0.0
    assert math.isclose(clamped_cosine([1, 1], [1, 0]), 1 / math.sqrt(2))
    assert math.isclose(clamped_cosine([3, 4], [4, 3]), 24 / 25)
    assert clamped_cosine([1, 0], [-1, 0]) == 0.0          # negative cosine clamped to 0
    assert clamped_cosine([1, 0], [-1, 1]) == 0.0          # -0.707 clamped to 0
    assert clamped_cosine([0, 0], [1, 2]) == 0.0           # zero vector: 0, not NaN


def test_cosine_metric_matches_direct_embedding_math(tiny_embedder_dir):
    from sentence_transformers import SentenceTransformer

    m = get_metric("cosine", embed=str(tiny_embedder_dir), batch_size=2)
    items = [item("北京"), item("the pump valve", ref="pump valve"), item("上海", ref="北京"),
             item(""), item("answer 42", ref="answer")]
    results = m.score_batch(items)
    st = SentenceTransformer(str(tiny_embedder_dir), device="cpu")
    assert results[0].value == pytest.approx(1.0, abs=1e-5)
    for k in (1, 2, 4):
        a, b = st.encode([items[k].prediction, items[k].reference])
        assert results[k].value == pytest.approx(clamped_cosine(a, b), abs=1e-5)
        assert 0.0 <= results[k].value <= 1.0
    assert (results[3].value, results[3].reason) == (0.0, "empty prediction")
    # batching does not change values
    assert [r.value for r in m.score_batch(items[1:3])] == [r.value for r in results[1:3]]


# -- origin -------------------------------------------------------------------------------------
def test_origin_chinese_with_jieba():
    m = get_metric("origin")           # auto -> jieba for CJK
    assert m.score(item("北京")).value == 1.0
    assert m.score(item("华北平原的北京")).value == 1.0
    hallucinated = m.score(item("北京烤鸭"))
    assert hallucinated.value == 0.0 and "北京烤鸭" in hallucinated.reason
    partly = m.score(item("首都是上海"))
    assert partly.value == 0.0 and "上海" in partly.reason and "首都" not in partly.reason.split(":")[-1]


def test_origin_character_tokenizer():
    m = get_metric("origin", tokenizer="char")
    assert split_words("北京，首都", "char") == ["北", "京", "首", "都"]
    assert m.score(item("首都北京")).value == 1.0       # every character occurs
    r = m.score(item("烤鸭"))
    assert r.value == 0.0 and r.reason.startswith("2/2 words not in context")


def test_origin_whitespace_and_empty():
    m = get_metric("origin", tokenizer="whitespace")
    ctx = "Replace the filter every 500 hours."
    assert m.score(item("the filter, every 500 hours", context=ctx)).value == 1.0
    r = m.score(item("the turbine", context=ctx))
    assert r.value == 0.0 and "'turbine'" in r.reason
    assert m.score(item("", context=ctx)).to_dict() == {"value": 0.0, "status": "ok", "reason": "empty prediction"}
    punct = get_metric("origin").score(item("。！"))
    assert punct.value == 0.0 and "no words" in punct.reason


# -- retrieval ----------------------------------------------------------------------------------
def test_levenshtein_context_recall_binary_and_fractional():
    assert levenshtein_similarity("abcd", "abce") == 0.75
    assert levenshtein_similarity("ab", "ac") == 0.5
    retrieved = ["abce", "zzzz"]
    refs = ["abcd", "wxyv"]
    assert context_recall(retrieved, refs) == 0.5
    assert context_recall(retrieved, refs, mode="binary") == 0.0
    assert context_recall(retrieved, ["abcd"], mode="binary") == 1.0
    assert context_recall(["ac"], ["ab"]) == 0.0            # 0.5 is not > 0.5
    assert context_recall(["ac"], ["ab"], threshold=0.4) == 1.0
    with pytest.raises(DataError, match="reference"):
        context_recall(["x"], [])
    cls = get_metric("context_recall", mode="binary")
    assert cls.score(EvalItem(retrieved=["abce"], reference_contexts=["abcd", "wxyv"])).value == 0.0
    assert cls.score(EvalItem(retrieved=["abce"])).status == "skipped"


def test_sentence_splitters_and_context_relevance():
    assert split_sentences("北京是首都。上海是港口！对吗？") == ["北京是首都。", "上海是港口！", "对吗？"]
    assert split_sentences("It is 3.5 m long. Next one! Done") == ["It is 3.5 m long.", "Next one!", "Done"]
    assert context_relevance(["北京是首都。上海是港口。"], ["北京是首都。天津很近。"]) == 0.5
    assert context_relevance(["The pump runs. It is red. Yes."], ["The pump runs. Yes."], lang="en") == pytest.approx(2 / 3)
    assert get_metric("context_relevance").score(EvalItem(retrieved=[], context="x")).status == "skipped"


def test_ir_metrics_hand_values():
    ranked = ["a", "b", "c", "d"]
    assert recall_at_k(ranked, {"c", "e"}, 3) == 0.5
    assert recall_at_k(ranked, {"c", "e"}, 2) == 0.0
    assert mrr_at_k(ranked, {"c"}, 3) == pytest.approx(1 / 3)
    assert mrr_at_k(ranked, {"c"}, 2) == 0.0
    assert ndcg_at_k(["a", "b", "c"], ["c"], 3) == pytest.approx(0.5)          # (1/log2 4) / 1
    # graded: DCG = 1 + 3/log2(3) = 2.892789; IDCG = 3 + 1/log2(3) = 3.630930
    assert ndcg_at_k(["a", "b"], {"a": 1, "b": 3}, 2) == pytest.approx(2.892789 / 3.630930, abs=1e-6)
    assert ndcg_at_k(["b", "a"], {"a": 1, "b": 3}, 2) == pytest.approx(1.0)
    with pytest.raises(DataError):
        recall_at_k(ranked, [], 3)
    with pytest.raises(DataError):
        mrr_at_k(ranked, {"a"}, 0)


# -- cosine: language of the references vs the embedder (issue 19g) ---------------------------------
class _ConstEmbedder:
    """Every text gets the same vector: an embedder that cannot tell answers apart."""

    def embed_documents(self, texts, progress=False):
        return [[1.0, 0.0] for _ in texts]


def test_cosine_warns_once_for_chinese_references_with_an_english_embedder(caplog):
    import logging

    from ragtune.eval.base import EvalItem
    from ragtune.eval.generation import CosineSimilarity, english_only_embedder

    m = CosineSimilarity(embed="all-MiniLM-L6-v2", embedder=_ConstEmbedder())
    items = [EvalItem(question="问题", context="上下文", reference="一九六三年", prediction="错误的答案"),
             EvalItem(question="问题", context="上下文", reference="河内总教区", prediction="别的")]
    with caplog.at_level(logging.WARNING, logger="ragtune"):
        assert [r.value for r in m.score_batch(items)] == [1.0, 1.0]   # the trap: wrong answers score 1
        m.score_batch(items)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "English-only" in r.getMessage()]
    assert len(warned) == 1
    assert "BAAI/bge-m3" in warned[0].getMessage() and "all-MiniLM-L6-v2" in warned[0].getMessage()
    assert m.describe()["warnings"] == [warned[0].getMessage()]
    assert english_only_embedder("sentence-transformers/all-mpnet-base-v2")
    assert not english_only_embedder("BAAI/bge-m3")


def test_cosine_no_warning_for_english_references_or_multilingual_embedder(caplog):
    import logging

    from ragtune.eval.base import EvalItem
    from ragtune.eval.generation import CosineSimilarity

    en = [EvalItem(question="q", context="c", reference="in 1963", prediction="1963")]
    zh = [EvalItem(question="q", context="c", reference="一九六三年", prediction="1963")]
    with caplog.at_level(logging.WARNING, logger="ragtune"):
        m1 = CosineSimilarity(embed="all-MiniLM-L6-v2", embedder=_ConstEmbedder())
        m1.score_batch(en)
        m2 = CosineSimilarity(embed="BAAI/bge-m3", embedder=_ConstEmbedder())
        m2.score_batch(zh)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "warnings" not in m1.describe() and "warnings" not in m2.describe()


def test_eval_summary_records_the_language_warning_from_the_model_card(tmp_path, tiny_embedder_dir):
    """A local embedder whose model card says `language: en` is English-only too; the warning lands in
    summary.json and report.md."""
    import json as _json
    import shutil

    from ragtune.eval.runner import evaluate_llm

    emb = tmp_path / "my-embedder"
    shutil.copytree(tiny_embedder_dir, emb)
    (emb / "README.md").write_text("---\nlanguage: en\nlicense: mit\n---\n# tiny\n")
    evalset = tmp_path / "eval.json"
    evalset.write_text(_json.dumps([{"context": "范廷颂是越南枢机。", "question": "他是谁?", "answers": ["越南枢机"]},
                                    {"context": "一九六三年任主教。", "question": "何年?", "answers": ["一九六三年"]}],
                                   ensure_ascii=False), encoding="utf-8")
    preds = tmp_path / "preds.json"
    preds.write_text(_json.dumps(["不知道", "一九六三年"], ensure_ascii=False), encoding="utf-8")
    run = evaluate_llm(evalset=str(evalset), predictions=str(preds), run_dir=str(tmp_path / "res"),
                       metrics=["cosine"], embed=str(emb))
    summary = _json.loads((tmp_path / "res" / "summary.json").read_text(encoding="utf-8"))
    assert len(summary["warnings"]) == 1 and "English-only" in summary["warnings"][0]
    assert summary["metrics"]["cosine"]["warnings"] == summary["warnings"]
    assert "warning: cosine:" in (tmp_path / "res" / "report.md").read_text(encoding="utf-8")
    assert run.summary["warnings"] == summary["warnings"]
