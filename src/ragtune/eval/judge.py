"""LLM-judged metrics with any OpenAI-compatible judge: ``faithfulness`` and ``answer_relevance``.

The :class:`Judge` is a frozen value (URL, key, model, sampling, retries): metrics pass their
prompts per call and never set anything on it (LazyLLM's ResponseRelevancy mutated the caller's
LLM prompt). Judge output must be JSON of an expected shape; malformed output is retried
``max_retries`` times, then the item is recorded as ``status="error"`` with the raw text. A call
that times out (or gets a 5xx / 429) is retried ``request_retries`` times with backoff, then the
item is recorded as an error with ``details.transient`` (not kept by a resumed run: asked again).
Without a model name the judge asks the server (``GET /models``, the first one: what ``ragtune
serve`` and vLLM serve).
"""
from __future__ import annotations

import abc
import json
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from ..core.config import Config
from ..core.errors import BackendError, ConfigError
from ..engine.client import ServerUrl, check_http_url
from .base import EvalItem, Metric, MetricResult, register_metric
from .generation import clamped_cosine


class JudgeUnavailable(BackendError):
    """The judge did not answer one call (timeout, 5xx, 429) after all its retries."""


class JudgeOutputError(Exception):
    """The judge answered, but not with the JSON we asked for (after all retries)."""

    def __init__(self, message: str, raw: list[str]):
        super().__init__(message)
        self.raw = raw


@dataclass(frozen=True)
class Judge:
    """An OpenAI-compatible chat endpoint: POST ``{base_url}/chat/completions``.

    ``base_url`` / ``api_key`` / ``model`` default to $RAGTUNE_JUDGE_BASE_URL (or $OPENAI_BASE_URL),
    $RAGTUNE_JUDGE_API_KEY (or $OPENAI_API_KEY) and $RAGTUNE_JUDGE_MODEL; without a model the
    server's first model (``GET /models``). ``base_url`` includes the API prefix, e.g.
    ``http://127.0.0.1:8000/v1``.
    """
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    model: str | None = None
    temperature: float = 0.0
    max_tokens: int = 1024
    timeout: float = 120.0
    max_retries: int = 2        # extra attempts after a malformed answer
    request_retries: int = 2    # extra attempts after a timeout, 5xx or 429
    backoff: float = 1.0        # seconds before the first retry, doubled each time

    def __post_init__(self):
        env = os.environ
        base = self.base_url or env.get("RAGTUNE_JUDGE_BASE_URL") or env.get("OPENAI_BASE_URL")
        if not base:
            raise ConfigError("no judge URL given",
                              hint="pass --judge-base-url / Judge(base_url=...) or set RAGTUNE_JUDGE_BASE_URL")
        try:
            check_http_url(base)   # the ServerUrl rule, also for a URL from the environment
        except ValueError as exc:
            where = ("base_url" if self.base_url else
                     "$RAGTUNE_JUDGE_BASE_URL" if env.get("RAGTUNE_JUDGE_BASE_URL") else "$OPENAI_BASE_URL")
            raise ConfigError(f"judge URL (from {where}): {exc}") from None
        object.__setattr__(self, "base_url", base.rstrip("/"))
        object.__setattr__(self, "api_key", self.api_key or env.get("RAGTUNE_JUDGE_API_KEY") or env.get("OPENAI_API_KEY"))
        object.__setattr__(self, "model", self.model or env.get("RAGTUNE_JUDGE_MODEL") or None)
        object.__setattr__(self, "_server_model", None)   # a cache, not a setting (not a field)
        object.__setattr__(self, "_lock", threading.Lock())

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def model_name(self) -> str:
        """``model``, or the first model the server lists (asked once)."""
        if self.model:
            return self.model
        import httpx

        with self._lock:   # type: ignore[attr-defined]
            if self._server_model is None:   # type: ignore[attr-defined]
                url = f"{self.base_url}/models"
                try:
                    resp = httpx.get(url, headers=self._headers(), timeout=self.timeout)
                    data = resp.json()["data"] if resp.status_code == 200 else None
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                    raise BackendError(f"no judge model named and {url} failed: {exc}",
                                       hint="pass --judge-model / Judge(model=...)") from None
                if not data or not isinstance(data[0], dict) or not data[0].get("id"):
                    raise BackendError(f"no judge model named and {url} lists none (HTTP {resp.status_code}: "
                                       f"{resp.text[:200]})", hint="pass --judge-model / Judge(model=...)")
                object.__setattr__(self, "_server_model", str(data[0]["id"]))
            return self._server_model   # type: ignore[attr-defined]

    def chat(self, messages: Sequence[dict[str, str]]) -> str:
        """One completion. A timeout, 5xx or 429 is retried ``request_retries`` times, then raises
        :class:`JudgeUnavailable`; an unreachable server or another HTTP error raises BackendError
        at once (every further call would fail the same way), naming the URL."""
        import httpx

        body = {"model": self.model_name(), "messages": list(messages), "temperature": self.temperature,
                "max_tokens": self.max_tokens}
        url = f"{self.base_url}/chat/completions"
        last = ""
        for attempt in range(1 + self.request_retries):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                resp = httpx.post(url, json=body, headers=self._headers(), timeout=self.timeout)
            except httpx.TimeoutException:
                last = f"no answer within {self.timeout:g} s (timeout)"
                continue
            except httpx.HTTPError as exc:
                raise BackendError(f"judge at {url} is unreachable: {exc}") from None
            if resp.status_code == 200:
                break
            last = f"HTTP {resp.status_code}: {resp.text[:300]}"
            if resp.status_code != 429 and resp.status_code < 500:
                raise BackendError(f"judge at {url} answered {last}")
        else:
            raise JudgeUnavailable(f"judge at {url}: {last}, after {1 + self.request_retries} attempts")
        try:
            return resp.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise BackendError(f"judge at {url} did not answer in the OpenAI chat format: {resp.text[:300]}") from None

    def ask_json(self, messages: Sequence[dict[str, str]], validate: Callable[[Any], Any]) -> tuple[Any, list[str]]:
        """Ask until ``validate(parsed_json)`` succeeds (1 + max_retries attempts).
        Returns (validated value, raw answers); raises JudgeOutputError with all raw answers."""
        raws: list[str] = []
        last = ""
        for _ in range(1 + self.max_retries):
            raw = self.chat(messages)
            raws.append(raw)
            try:
                return validate(parse_json_answer(raw)), raws
            except (ValueError, KeyError, TypeError) as exc:
                last = str(exc)
        raise JudgeOutputError(f"judge output malformed after {len(raws)} attempts: {last}", raws)


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def parse_json_answer(raw: str) -> Any:
    """JSON from a judge answer: the whole text, a ```json fenced block, or the outermost {...}."""
    text = (raw or "").strip()
    candidates = [text]
    m = _FENCE.search(text)
    if m:
        candidates.append(m.group(1).strip())
    if "{" in text and "}" in text:
        candidates.append(text[text.index("{"): text.rindex("}") + 1])
    for c in candidates:
        try:
            return json.loads(c)
        except ValueError:
            continue
    raise ValueError(f"not JSON: {text[:80]!r}")


# -- prompts (ragas-style two-step faithfulness; question generation for answer relevance) -------
STATEMENTS_PROMPT = (
    "Split the answer into short, self-contained factual statements.\n"
    "Question: {question}\nAnswer: {answer}\n\n"
    'Reply with JSON only: {{"statements": ["...", "..."]}}'
)
VERDICTS_PROMPT = (
    "For each statement decide whether it can be directly inferred from the context "
    "(verdict 1) or not (verdict 0).\nContext: {context}\n\nStatements:\n{statements}\n\n"
    'Reply with JSON only: {{"verdicts": [{{"statement": "...", "verdict": 1, "reason": "..."}}]}} '
    "with exactly one verdict per statement, in order."
)
QUESTIONS_PROMPT = (
    "Write {n} different questions that the following answer answers.\nAnswer: {answer}\n\n"
    'Reply with JSON only: {{"questions": ["...", "..."]}}'
)


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _string_list(key: str, min_len: int = 1):
    def validate(obj: Any) -> list[str]:
        items = obj[key]
        if not isinstance(items, list) or len(items) < min_len or not all(isinstance(s, str) and s.strip() for s in items):
            raise ValueError(f"'{key}' must be a list of at least {min_len} non-empty strings")
        return [s.strip() for s in items]
    return validate


def _verdicts(n: int):
    def validate(obj: Any) -> list[int]:
        items = obj["verdicts"]
        if not isinstance(items, list) or len(items) != n:
            raise ValueError(f"expected {n} verdicts, got {len(items) if isinstance(items, list) else type(items).__name__}")
        out = []
        for v in items:
            verdict = v["verdict"] if isinstance(v, dict) else v
            if verdict in (1, "1", True, "yes"):
                out.append(1)
            elif verdict in (0, "0", False, "no"):
                out.append(0)
            else:
                raise ValueError(f"verdict must be 0 or 1, got {verdict!r}")
        return out
    return validate


class JudgeParams(Config):
    base_url: ServerUrl | None = Field(None, description="OpenAI-compatible judge URL (or $RAGTUNE_JUDGE_BASE_URL).")
    model: str | None = Field(None, description="Judge model name (or $RAGTUNE_JUDGE_MODEL).")
    max_retries: int = Field(2, ge=0, description="Extra attempts after a malformed judge answer.")
    timeout: float = Field(120.0, gt=0, description="Seconds per judge call.")
    max_tokens: int = Field(1024, ge=1, description="Tokens the judge may answer per call.")
    request_retries: int = Field(2, ge=0, description="Extra attempts after a judge call times out (or a 5xx).")
    concurrency: int = Field(1, ge=1, description="Items judged in parallel (judge calls in flight).")


# parameters that change how the judge is reached, not what it answers (a resumed run may change them)
JUDGE_TRANSPORT = ("base_url", "timeout", "request_retries", "concurrency")


class _JudgedMetric(Metric):
    Params = JudgeParams
    params: JudgeParams
    concurrency: int

    def __init__(self, params: Any = None, *, judge: Judge | None = None, api_key: str | None = None,
                 **values: Any):
        super().__init__(params, **values)
        p = self.params
        self.judge = judge if judge is not None else Judge(p.base_url, api_key, p.model, max_retries=p.max_retries,
                                                          timeout=p.timeout, max_tokens=p.max_tokens,
                                                          request_retries=p.request_retries)

    def describe(self) -> dict[str, Any]:
        model = self.judge.model or self.judge._server_model   # type: ignore[attr-defined]
        return {**super().describe(), "judge_url": self.judge.base_url, "judge_model": model}

    def fingerprint(self) -> dict[str, Any]:
        """What decides this metric's answers (for resuming): its parameters but how the judge is
        reached, the judge model (asked of the server when not named) and sampling."""
        params = {k: v for k, v in self.params.model_dump(mode="json").items() if k not in JUDGE_TRANSPORT}
        return {"name": self.name, "params": params, "judge_model": self.judge.model_name(),
                "temperature": self.judge.temperature, "max_tokens": self.judge.max_tokens,
                "max_retries": self.judge.max_retries}

    def score(self, item: EvalItem) -> MetricResult:
        if not (item.prediction or "").strip():
            return MetricResult.ok(0.0, "empty prediction")
        try:
            return self._judge(item)
        except JudgeOutputError as exc:
            return MetricResult.error(str(exc), raw=exc.raw)
        except JudgeUnavailable as exc:
            return MetricResult.error(str(exc), transient=True)

    @abc.abstractmethod
    def _judge(self, item: EvalItem) -> MetricResult:
        """Ask the judge about one non-empty prediction; raise JudgeOutputError on unusable output."""


@register_metric("faithfulness")
class Faithfulness(_JudgedMetric):
    """Supported statements / all statements of the answer, as judged against the context."""
    title = "Faithfulness"
    needs = ("prediction", "context")

    def _judge(self, item: EvalItem) -> MetricResult:
        statements, _ = self.judge.ask_json(
            _user(STATEMENTS_PROMPT.format(question=item.question, answer=item.prediction)),
            _string_list("statements"))
        numbered = "\n".join(f"{i + 1}. {s}" for i, s in enumerate(statements))
        verdicts, _ = self.judge.ask_json(
            _user(VERDICTS_PROMPT.format(context=item.context, statements=numbered)), _verdicts(len(statements)))
        supported = sum(verdicts)
        reason = None if supported == len(statements) else f"{len(statements) - supported}/{len(statements)} statements unsupported"
        return MetricResult.ok(supported / len(statements), reason, statements=statements, verdicts=verdicts)


class AnswerRelevanceParams(JudgeParams):
    embed: str = Field("all-MiniLM-L6-v2", description="Embedder of the generated vs real question.")
    n: int = Field(3, ge=1, description="Questions the judge generates per answer.")


@register_metric("answer_relevance")
class AnswerRelevance(_JudgedMetric):
    """Mean clamped cosine between the real question and ``n`` questions the judge generates
    from the answer (embedded with ``embed``)."""
    title = "Answer relevance"
    needs = ("prediction", "question")
    Params = AnswerRelevanceParams
    embed: str
    n: int

    def __init__(self, params: Any = None, *, judge: Judge | None = None, embedder: Any = None,
                 api_key: str | None = None, **values: Any):
        super().__init__(params, judge=judge, api_key=api_key, **values)
        from ..models.embedder import LazyEmbedder

        self._embedder = embedder or LazyEmbedder(self.embed)

    def _judge(self, item: EvalItem) -> MetricResult:
        questions, _ = self.judge.ask_json(_user(QUESTIONS_PROMPT.format(n=self.n, answer=item.prediction)),
                                           _string_list("questions"))
        questions = questions[: self.n]
        vecs = self._embedder.embed_documents([item.question, *questions])
        scores = [round(clamped_cosine(vecs[0], v), 6) for v in vecs[1:]]
        return MetricResult.ok(sum(scores) / len(scores), None, questions=questions, scores=scores)
