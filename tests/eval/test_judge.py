"""LLM-judged metrics against a real local HTTP judge that returns scripted (and garbage) answers."""
from __future__ import annotations

import dataclasses
import json

import pytest

from ragtune.core.errors import BackendError, ConfigError
from ragtune.eval import EvalItem, Judge, clamped_cosine, get_metric, parse_json_answer

from .judge_server import running_judge

ITEM = EvalItem(question="What pressure does the pump run at?", context="The pump runs at 5 bar. It is red.",
                reference="5 bar", prediction="The pump runs at 5 bar and it is blue.")


@pytest.fixture(scope="module")
def judge_server():
    with running_judge() as server:
        yield server


@pytest.fixture
def server(judge_server):
    judge_server.script.clear()
    judge_server.requests.clear()
    judge_server.fail_status = None
    judge_server.delays.clear()
    judge_server.models[:] = ["scripted-judge"]
    judge_server.strict_model = False
    judge_server.fail_from = None
    return judge_server


def test_parse_json_answer_accepts_fences_and_surrounding_text():
    assert parse_json_answer('```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json_answer('Sure! {"a": [1, 2]} hope this helps') == {"a": [1, 2]}
    with pytest.raises(ValueError):
        parse_json_answer("I think it is faithful.")


def test_faithfulness_scores_supported_over_total(server):
    server.script += [json.dumps({"statements": ["The pump runs at 5 bar.", "The pump is blue."]}),
                      "```json\n" + json.dumps({"verdicts": [{"statement": "s1", "verdict": 1, "reason": "in context"},
                                                             {"statement": "s2", "verdict": 0, "reason": "red"}]}) + "\n```"]
    judge = Judge(server.base_url, api_key="sk-test", model="judge-1")
    before = dataclasses.asdict(judge)
    r = get_metric("faithfulness", judge=judge).score(ITEM)
    assert (r.status, r.value, r.reason) == ("ok", 0.5, "1/2 statements unsupported")
    assert r.details["verdicts"] == [1, 0]
    assert len(server.requests) == 2
    assert server.requests[0]["auth"] == "Bearer sk-test"
    assert server.requests[0]["body"]["model"] == "judge-1"
    assert "The pump is blue." in server.requests[1]["body"]["messages"][0]["content"]
    assert "The pump runs at 5 bar. It is red." in server.requests[1]["body"]["messages"][0]["content"]
    assert dataclasses.asdict(judge) == before           # the judge is never mutated
    with pytest.raises(dataclasses.FrozenInstanceError):
        judge.model = "other"                             # type: ignore[misc]


def test_garbage_judge_is_retried_then_recorded_as_error_with_raw_text(server):
    server.script += ["I am not JSON", '{"statements": "not a list"}', "still garbage"]
    r = get_metric("faithfulness", judge=Judge(server.base_url, max_retries=2)).score(ITEM)
    assert r.status == "error" and r.value is None
    assert "malformed after 3 attempts" in r.reason
    assert r.details["raw"] == ["I am not JSON", '{"statements": "not a list"}', "still garbage"]
    assert len(server.requests) == 3


def test_garbage_then_valid_answer_succeeds_after_retry(server):
    server.script += ["garbage", json.dumps({"statements": ["The pump runs at 5 bar."]}),
                      json.dumps({"verdicts": [1, 1]}),           # wrong count: retried
                      json.dumps({"verdicts": [{"verdict": 1}]})]
    r = get_metric("faithfulness", judge=Judge(server.base_url, max_retries=1)).score(ITEM)
    assert (r.status, r.value, r.reason) == ("ok", 1.0, None)
    assert len(server.requests) == 4


def test_empty_prediction_scores_zero_without_calling_the_judge(server):
    r = get_metric("faithfulness", judge=Judge(server.base_url)).score(EvalItem(question="q", context="c"))
    assert (r.value, r.reason) == (0.0, "empty prediction") and server.requests == []


def test_answer_relevance_mean_clamped_cosine(server, tiny_embedder_dir):
    from sentence_transformers import SentenceTransformer

    generated = [ITEM.question, "Which colour is the pump?", "How many bar?"]
    server.script.append(json.dumps({"questions": generated}))
    r = get_metric("answer_relevance", judge=Judge(server.base_url), embed=str(tiny_embedder_dir), n=3).score(ITEM)
    st = SentenceTransformer(str(tiny_embedder_dir), device="cpu")
    q, *gen = st.encode([ITEM.question, *generated])
    expected = [clamped_cosine(q, g) for g in gen]
    assert r.status == "ok"
    assert r.details["scores"][0] == pytest.approx(1.0, abs=1e-5)      # identical question
    assert r.value == pytest.approx(sum(expected) / 3, abs=1e-5)
    assert "3 different questions" in server.requests[0]["body"]["messages"][0]["content"]


def test_answer_relevance_garbage_is_error(server, tiny_embedder_dir):
    server.script += ['{"questions": []}', "nope"]
    r = get_metric("answer_relevance", judge=Judge(server.base_url, max_retries=1), embed=str(tiny_embedder_dir)).score(ITEM)
    assert r.status == "error" and r.details["raw"] == ['{"questions": []}', "nope"]


def test_http_failure_and_missing_url_are_clear_errors(server, monkeypatch):
    server.fail_status = 500
    with pytest.raises(BackendError, match="HTTP 500.*after 2 attempts"):
        Judge(server.base_url, request_retries=1, backoff=0.01).chat([{"role": "user", "content": "hi"}])
    assert len(server.requests) == 2   # a 5xx is retried
    for var in ("RAGTUNE_JUDGE_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="no judge URL"):
        Judge()
    monkeypatch.setenv("OPENAI_BASE_URL", "127.0.0.1:8000/v1")   # no scheme: refused up front, naming the variable
    with pytest.raises(ConfigError, match=r"judge URL \(from \$OPENAI_BASE_URL\): '127.0.0.1:8000/v1' is not an http\(s\) URL"):
        Judge()
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.setenv("RAGTUNE_JUDGE_BASE_URL", server.base_url + "/")
    monkeypatch.setenv("RAGTUNE_JUDGE_API_KEY", "sk-env")
    j = Judge()
    assert j.base_url == server.base_url and j.api_key == "sk-env" and "sk-env" not in repr(j)


def test_without_a_model_name_the_judge_takes_the_servers_first_model(server, monkeypatch):
    """`ragtune serve` answers model "default" with a 404: the judge asks GET /models instead."""
    monkeypatch.delenv("RAGTUNE_JUDGE_MODEL", raising=False)
    server.models[:] = ["served-llm", "other"]
    server.strict_model = True
    server.script += [json.dumps({"statements": ["The pump runs at 5 bar."]}), json.dumps({"verdicts": [1]})]
    judge = Judge(server.base_url)
    assert judge.model is None and judge.model_name() == "served-llm"
    r = get_metric("faithfulness", judge=judge).score(ITEM)
    assert (r.status, r.value) == ("ok", 1.0)
    assert [q["body"]["model"] for q in server.requests] == ["served-llm", "served-llm"]
    with pytest.raises(BackendError, match="404"):        # a model the server does not serve: not retried
        Judge(server.base_url, model="default").chat([{"role": "user", "content": "hi"}])
    server.models.clear()
    with pytest.raises(BackendError, match="lists none"):
        Judge(server.base_url).model_name()


def test_a_call_that_times_out_after_retries_is_an_error_for_that_item(server):
    server.delays += [2.0, 2.0]
    judge = Judge(server.base_url, model="m", timeout=0.3, request_retries=1, backoff=0.01)
    r = get_metric("faithfulness", judge=judge).score(ITEM)
    assert r.status == "error" and "timeout" in r.reason and "after 2 attempts" in r.reason
    assert r.details == {"transient": True} and len(server.requests) == 2
    # a slow first attempt, then an answer: retried and scored
    server.requests.clear()
    server.delays += [2.0]
    server.script += ["slow", json.dumps({"statements": ["The pump runs at 5 bar."]}), json.dumps({"verdicts": [1]})]
    assert get_metric("faithfulness", judge=judge).score(ITEM).value == 1.0
    assert len(server.requests) == 3


def _statements(n: int = 1) -> list[str]:
    return [json.dumps({"statements": [f"fact {k}" for k in range(n)]}), json.dumps({"verdicts": [1] * n})]


def test_eval_llm_journals_judge_results_and_resumes_after_an_abort(server, tmp_path, monkeypatch):
    """A timed-out item is an error (counted), a rejected request aborts the run but keeps what was
    judged; the rerun asks only about the rest, and refuses a journal of other judge settings."""
    from ragtune.core.errors import ConfigError
    from ragtune.eval.runner import evaluate_llm

    monkeypatch.delenv("RAGTUNE_JUDGE_MODEL", raising=False)
    evalset = [{"context": f"context {k}", "question": f"question {k}?", "answers": f"answer {k}"} for k in range(3)]
    (tmp_path / "ev.json").write_text(json.dumps(evalset))
    (tmp_path / "preds.json").write_text(json.dumps([f"prediction {k}" for k in range(3)]))
    out = tmp_path / "out"
    out.mkdir()
    server.models[:] = ["served-llm"]
    server.strict_model = True          # as `ragtune serve`: "default" would be a 404
    cfg = dict(evalset=str(tmp_path / "ev.json"), predictions=str(tmp_path / "preds.json"), output=str(out),
               metrics=["faithfulness"], judge_base_url=server.base_url, judge_timeout=0.5,
               judge_request_retries=0, judge_concurrency=1, judge_max_tokens=64)
    # item 0 judged; item 1's first call times out; item 2's first call is rejected (a 400): abort
    server.script += [*_statements(), "slow"]
    server.delays += [0, 0, 2.0]
    server.fail_status, server.fail_from = 400, 3
    with pytest.raises(BackendError, match="HTTP 400"):
        evaluate_llm(**cfg)
    side = out / "eval-preds.partial.jsonl"
    rows = [json.loads(line) for line in side.read_text().splitlines()]
    assert rows[0]["meta"]["metrics"][0]["judge_model"] == "served-llm"
    assert [(r["metric"], r["index"], r["result"]["status"]) for r in rows[1:]] == [("faithfulness", 0, "ok")]
    assert all(q["body"]["model"] == "served-llm" and q["body"]["max_tokens"] == 64 for q in server.requests)
    assert not list(out.glob("eval-*/"))

    with pytest.raises(ConfigError, match=r"other data or settings \(changed: metrics\)"):     # other judge settings: refused, not mixed in
        evaluate_llm(**{**cfg, "judge_max_tokens": 32})

    # rerun (a longer timeout may change: it does not change answers): items 1 and 2 only
    server.requests.clear()
    server.fail_status = server.fail_from = None
    server.script += [*_statements(2), "slow"]
    server.delays += [0, 0, 2.0]
    run = evaluate_llm(**{**cfg, "judge_timeout": 1.0})
    assert len(server.requests) == 3
    got = [row["scores"]["faithfulness"] for row in run.items]
    assert [g["status"] for g in got] == ["ok", "ok", "error"]
    assert "timeout" in got[2]["reason"] and got[2]["details"] == {"transient": True}
    agg = run.summary["metrics"]["faithfulness"]
    assert (agg["n_ok"], agg["n_error"], agg["judge_model"]) == (2, 1, "served-llm")
    assert not side.exists()
