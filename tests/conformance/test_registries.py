"""One conformance table for every registry: each registered fine-tune method, engine, metric and store
runs through the same contract tests. A new entry without a row in its CASES table fails
`test_every_entry_has_a_case`, so adding one is: one module, one registration, one row here."""
from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from ragtune.core.config import Config
from ragtune.core.errors import BackendError, ConfigError
from ragtune.core.prompt import CHAT_TEMPLATES
from ragtune.engine.base import ENGINES, Engine, EngineSettings, PromptTooLongError, SamplingParams, ServerEngine
from ragtune.eval.base import METRICS, EvalItem, Metric, MetricResult
from ragtune.finetune import METHODS, FinetuneConfig, FinetuneMethod, FinetuneResult
from ragtune.rag.store import STORES, Store

from ..export.fixtures import g3_dir, g3_export, g3_readable_dir  # noqa: F401  (the llamacpp case)
from ..finetune.conftest import span_items, write_json
from ..finetune_embed.synth import make_task


# -- fine-tune methods ---------------------------------------------------------------------------------------
def _llm_data(tmp_path):
    return write_json(tmp_path / "train.json", span_items(8, seed=5))


def _embed_data(tmp_path):
    return make_task(tmp_path, n_train=16, n_eval=4)[0]


# name -> (base fixture, data maker, params of a 1-2 step run, the backend it needs or None)
METHOD_CASES = {
    "lora": ("tiny_llm_dir", _llm_data, {"max_steps": 2, "cutoff_len": 64, "dtype": "fp32"}, None),
    "freeze": ("tiny_llm_dir", _llm_data, {"max_steps": 2, "cutoff_len": 64, "dtype": "fp32",
                                           "freeze_trainable_layers": 1}, None),
    "full": ("tiny_llm_dir", _llm_data, {"max_steps": 2, "cutoff_len": 64, "dtype": "fp32"}, None),
    "dora": ("tiny_llm_dir", _llm_data, {"max_steps": 2, "cutoff_len": 64, "dtype": "fp32"}, None),
    # rows without teacher logprobs train on CE alone (tests/synth/test_kd.py covers the KL term)
    "kd": ("tiny_llm_dir", _llm_data, {"max_steps": 2, "cutoff_len": 64, "dtype": "fp32"}, None),
    "llamafactory": ("tiny_llm_dir", _llm_data, {"max_steps": 2}, "llamafactory-cli"),
    "embedding": ("tiny_embedder_dir", _embed_data, {"num_train_epochs": 1, "per_device_train_batch_size": 8,
                                                     "dtype": "fp32", "eval_split": 0.25}, None),
    "flagembedding": ("tiny_embedder_dir", _embed_data, {"eval_split": 0}, "FlagEmbedding"),
}


def _backend_missing(backend: str | None) -> bool:
    if backend is None:
        return False
    return shutil.which(backend) is None and importlib.util.find_spec(backend) is None


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name, tmp_path, request):
    method = METHODS.get(name)
    assert isinstance(method, FinetuneMethod) and method.name == name and method.kind in ("llm", "embedding")
    assert issubclass(method.config_cls, FinetuneConfig) and method.description
    base_fixture, make_data, params, backend = METHOD_CASES[name]
    base, train, out = str(request.getfixturevalue(base_fixture)), str(make_data(tmp_path)), tmp_path / "out"
    cfg = method.config(base=base, train=train, output=str(out), **params)
    assert cfg.method == name
    assert type(cfg).build(None, **cfg.to_dict()) == cfg                 # the spec round-trips (YAML/JSON)
    with pytest.raises(ConfigError, match="learning_rat"):
        method.config(base=base, learning_rat=1)
    if _backend_missing(backend):   # not installed here: the error must say how to install it
        with pytest.raises(BackendError, match="pip install"):
            cfg.execute()
        return
    result = cfg.execute()
    assert isinstance(result, FinetuneResult) and result.output == out
    assert result.metrics and (out / "metrics.json").exists()


# -- engines ---------------------------------------------------------------------------------------------------
# name -> fixture giving a model the engine loads (in-process engines), or the fake-server fixture
ENGINE_CASES = {
    "builtin": "readable_llm_dir",
    "llamacpp": "g3_export",
    "vllm": "fake_vllm",
}
ENGINE_BACKENDS = {"llamacpp": "llama_cpp"}   # in-process engines whose backend is an optional extra


@pytest.fixture()
def fake_vllm(tmp_path, monkeypatch):
    import os
    import stat
    import sys

    from ..serve.test_vllm import FAKE_VLLM

    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "vllm"
    exe.write_text(FAKE_VLLM.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_COUNTER", str(tmp_path / "starts"))
    return tmp_path


@pytest.fixture(scope="module")
def readable_llm_dir(tiny_llm_dir, tmp_path_factory):
    from ..serve.serve_fixtures import make_readable_llm

    return make_readable_llm(tiny_llm_dir, tmp_path_factory.mktemp("conf") / "readable")


@pytest.mark.parametrize("name", ENGINES.names())
def test_engine_contract(name, request, tmp_path, tiny_llm_dir):
    from ragtune.core.prompt import PromptConfig

    cls = ENGINES.get(name)
    assert issubclass(cls.Settings, EngineSettings) and cls.description
    target = request.getfixturevalue(ENGINE_CASES[name])
    if issubclass(cls, ServerEngine):
        server = cls.start(str(tiny_llm_dir), settings=cls.Settings(log_dir=str(tmp_path / "logs")))
        try:
            import httpx

            assert httpx.get(server.url + "/health", timeout=5).status_code == 200 and server.name
        finally:
            server.stop()
        return
    assert issubclass(cls, Engine)
    with pytest.raises(ConfigError):
        cls.Settings.build(None, no_such_setting=1)
    if name in ENGINE_BACKENDS and importlib.util.find_spec(ENGINE_BACKENDS[name]) is None:
        with pytest.raises(BackendError, match="pip install"):  # not installed: say how to install it
            cls.load(str(target))
        return
    engine = cls.load(str(target), prompt=PromptConfig(system="Default system."))
    try:
        msgs = [{"role": "user", "content": "what is the pump"}]
        greedy = SamplingParams(max_tokens=8)
        first = engine.generate([msgs], greedy)[0]
        assert engine.generate([msgs], greedy)[0].token_ids == first.token_ids       # greedy is deterministic
        assert first.finish_reason in ("stop", "length") and first.completion_tokens <= 8
        assert engine.generate([msgs], SamplingParams(max_tokens=2))[0].completion_tokens <= 2
        # streaming: the deltas add up to the final text
        deltas: list[str] = []
        streamed = engine.submit(engine.encode_chat(msgs), greedy, on_delta=deltas.append).result(timeout=120)
        assert "".join(deltas) == streamed.text == first.text
        # a stop string cuts the text before it
        if len(first.text.strip()) > 4:
            stop = first.text.strip()[2:4]
            cut = engine.generate([msgs], SamplingParams(max_tokens=8, stop=(stop,)))[0]
            assert stop not in cut.text and cut.finish_reason == "stop" and first.text.startswith(cut.text)
        # prompt settings are per request: the default stays, a request's own wins
        own = engine.encode_chat(msgs, PromptConfig(system="Another system."))
        assert own != engine.encode_chat(msgs) and engine.prompt.system == "Default system."
        with pytest.raises(PromptTooLongError):
            engine.submit([1] * engine.max_model_len, greedy)
        assert isinstance(engine.stats(), dict)
    finally:
        engine.close()


# -- metrics ---------------------------------------------------------------------------------------------------
CTX = "The Varnok AB-120 pump is serviced every 500 operating hours at the Arlen plant."
GOOD = EvalItem(question="How often is the pump serviced?", context=CTX, reference="every 500 operating hours",
                prediction="every 500 operating hours", all_answers=["every 500 operating hours"],
                retrieved=[CTX], reference_contexts=[CTX])
BAD = EvalItem(question="How often is the pump serviced?", context=CTX, reference="every 500 operating hours",
               prediction="zebra crossing on mars", all_answers=["every 500 operating hours"],
               retrieved=["Zebras live in Africa."], reference_contexts=[CTX])
JSON_REF = '{"pump": {"pressure": 4.5, "unit": "bar"}, "parts": ["filter"]}'
JSON_ITEMS = (EvalItem(reference=JSON_REF, prediction=JSON_REF),
              EvalItem(reference=JSON_REF, prediction='{"pump": {"pressure": 4.5, "unit": "bar"'))
# name -> constructor kwargs (fixtures by name are resolved), or a judge script for judged metrics;
# "items": the (good, bad) pair for metrics that do not score text answers
METRIC_CASES: dict[str, dict] = {
    "json_valid": {"items": JSON_ITEMS}, "json_field_precision": {"items": JSON_ITEMS},
    "json_field_recall": {"items": JSON_ITEMS}, "json_field_f1": {"items": JSON_ITEMS},
    "json_schema_valid": {"items": JSON_ITEMS, "json_schema": {"type": "object", "required": ["pump"]}},
    "exact": {}, "exact_lenient": {}, "origin": {"tokenizer": "whitespace"}, "cosine": {"embed": "tiny_embedder_dir"},
    "context_recall": {}, "context_relevance": {}, "cmrc_em": {}, "cmrc_f1": {}, "squad_em": {}, "squad_f1": {},
    "faithfulness": {"judge": ['{"statements": ["s"]}', '{"verdicts": [1]}',
                               '{"statements": ["s"]}', '{"verdicts": [0]}']},
    "answer_relevance": {"embed": "tiny_embedder_dir",
                         "judge": ['{"questions": ["How often is the pump serviced?"]}',
                                   '{"questions": ["What is the capital of Peru?"]}']},
}


@pytest.mark.parametrize("name", METRICS.names())
def test_metric_contract(name, request):
    from ..eval.judge_server import running_judge

    cls = METRICS.get(name)
    assert issubclass(cls, Metric) and cls.name == name and cls.title
    assert cls.kind in ("binary", "continuous") and isinstance(cls.higher_is_better, bool)
    assert issubclass(cls.Params, Config)
    with pytest.raises(ConfigError, match="no_such_param"):
        cls(no_such_param=1)
    case = dict(METRIC_CASES[name])
    script = case.pop("judge", None)
    good_item, bad_item = case.pop("items", (GOOD, BAD))
    params = {k: str(request.getfixturevalue(v)) if isinstance(v, str) and v.endswith("_dir") else v
              for k, v in case.items()}
    with running_judge() if script else _nothing() as judge:
        if judge is not None:
            judge.script = list(script)
            params["base_url"] = judge.base_url
        metric = cls(**params)
        described = metric.describe()
        assert described["name"] == name and described["kind"] == cls.kind
        json.dumps(described)                                          # summary.json can hold it
        good, bad = metric.score_batch([good_item])[0], metric.score_batch([bad_item])[0]
    for r in (good, bad):
        assert isinstance(r, MetricResult) and r.status == "ok" and 0.0 <= r.value <= 1.0
        if cls.kind == "binary":
            assert r.value in (0.0, 1.0)
    assert (good.value > bad.value) == cls.higher_is_better
    empty = metric_empty(cls, params)
    assert empty is None or empty.status in ("ok", "skipped")


def metric_empty(cls, params):
    if "judge" in cls.__module__ or "base_url" in params:
        return None
    item = EvalItem(question="q", context=CTX, reference="r", prediction="", retrieved=[], reference_contexts=[CTX])
    return cls(**params).score_batch([item])[0]


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


# -- stores ----------------------------------------------------------------------------------------------------
STORE_CASES = {"memory": lambda tmp: {}, "milvus": lambda tmp: {"uri": str(tmp / "conformance.db")}}


@pytest.mark.parametrize("name", STORES.names())
def test_store_contract(name, tmp_path):
    import numpy as np

    store = STORES.get(name)(**STORE_CASES[name](tmp_path))
    assert isinstance(store, Store)
    coll = "conformance_c1"
    assert store.ids(coll) == set() and store.search(coll, [1.0, 0.0], 3) == []
    vecs = np.array([[1.0, 0.0], [0.0, 1.0], [0.7071, 0.7071]], dtype=np.float32)
    store.add(coll, ["a", "b", "c"], vecs, ["A", "B", "C"])
    assert store.ids(coll) == {"a", "b", "c"}
    hits = store.search(coll, [1.0, 0.0], 2)
    assert [h[0] for h in hits] == ["a", "c"] and hits[0][1] == pytest.approx(1.0, abs=1e-4)
    store.delete(coll, ["a"])
    assert store.ids(coll) == {"b", "c"} and store.search(coll, [1.0, 0.0], 1)[0][0] == "c"


# -- chat templates -----------------------------------------------------------------------------------------
# name -> (system + user + answer rendered for training, the stop strings)
CHAT_TEMPLATE_CASES = {
    "plain": ("S\n\n### Instruction:\nU\n\n### Response:\nA<eos>", ("\n### Instruction:", "### Response:", "\n\n### ")),
    "gemma": ("<start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>", ("<end_of_turn>",)),
}


@pytest.mark.parametrize("name", CHAT_TEMPLATES.names())
def test_chat_template_contract(name):
    """Training text, the generation prompt as its prefix, one trainable answer, non-empty stops."""
    from ragtune.core.prompt import ChatTemplate, PromptConfig, build_prompt, render_turns, template_stops
    from tests.tiny_models import make_tokenizer

    tok = make_tokenizer()
    entry = CHAT_TEMPLATES.get(name)
    assert isinstance(entry, ChatTemplate) and entry.name == name and entry.stop
    cfg = PromptConfig(template=name, system="S")
    convo = [{"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]
    segments = render_turns(tok, convo, cfg)
    expected, stops = CHAT_TEMPLATE_CASES[name]
    assert "".join(t for t, _ in segments) == expected
    assert [t for t, trainable in segments if trainable][0].startswith("A")
    assert expected.startswith(build_prompt(tok, convo[:1], cfg))
    assert template_stops(tok, cfg) == stops


def test_every_entry_has_a_case():
    """Adding a method, engine, metric or store means adding its row here (and so its contract test)."""
    assert set(METHODS.names()) <= set(METHOD_CASES), set(METHODS.names()) - set(METHOD_CASES)
    assert set(ENGINES.names()) <= set(ENGINE_CASES), set(ENGINES.names()) - set(ENGINE_CASES)
    assert set(METRICS.names()) <= set(METRIC_CASES), set(METRICS.names()) - set(METRIC_CASES)
    assert set(STORES.names()) <= set(STORE_CASES), set(STORES.names()) - set(STORE_CASES)
    assert set(CHAT_TEMPLATES.names()) <= set(CHAT_TEMPLATE_CASES), set(CHAT_TEMPLATES.names()) - set(CHAT_TEMPLATE_CASES)
