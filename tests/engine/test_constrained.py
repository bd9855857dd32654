"""Structured output (response_format) on the builtin engine: constrained decoding with llguidance,
directly and through the real HTTP server."""
from __future__ import annotations

import json

import pytest

from ragtune.core.errors import ConfigError
from ragtune.engine.builtin import SamplingParams
from ragtune.engine.constrained import parse_response_format, request_format

pytest.importorskip("llguidance")

SCHEMA = {"type": "object", "properties": {
    "machine": {"type": "string", "maxLength": 12},
    "pressure": {"type": "object", "properties": {"value": {"type": "integer", "minimum": 0, "maximum": 99},
                                                  "unit": {"enum": ["bar", "psi"]}},
                 "required": ["value", "unit"], "additionalProperties": False},
    "parts": {"type": "array", "items": {"type": "string", "maxLength": 8}, "minItems": 1, "maxItems": 3}},
    "required": ["machine", "pressure", "parts"], "additionalProperties": False}
PROMPTS = [f"{w} pump {i} pressure" for i, w in enumerate(["the", "what", "which", "north", "valve"] * 10)]


def schema_format(schema=SCHEMA):
    return parse_response_format({"type": "json_schema", "json_schema": {"name": "r", "schema": schema}})


@pytest.fixture(scope="module")
def random_engine(tiny_llm_dir):
    """The plain random tiny model (not the readable one, which never stops writing words: a JSON
    string it opens runs to max_tokens, as it would on any server)."""
    from ragtune.engine.builtin import BuiltinEngine

    engine = BuiltinEngine.load(str(tiny_llm_dir), dtype="fp32", device="cpu")
    yield engine
    engine.close()


def test_json_object_responses_parse_unless_cut_by_max_tokens(random_engine):
    """A random model may open a string and repeat a word in it until max_tokens (then the answer is
    cut, ``finish_reason: length``, as on any server); every answer it closes is a JSON object.
    (100% of 50 on the real model: the slow test in tests/engine/test_llamacpp_slow.py.)"""
    import llguidance

    fmt = parse_response_format({"type": "json_object"})
    out = random_engine.generate(PROMPTS, SamplingParams(max_tokens=48, response_format=fmt))
    closed = [c for c in out if c.finish_reason == "stop"]
    assert len(closed) >= 25
    assert all(isinstance(json.loads(c.text), dict) for c in closed)
    for c in out:
        if c.finish_reason == "length":  # cut, but a valid prefix: the grammar accepts every token of it
            tok = random_engine.grammar_context().tokenizer
            m = llguidance.LLMatcher(tok, fmt.grammar(), log_level=0)
            assert m.consume_tokens(c.token_ids) and not m.is_accepting()


def test_schema_is_honoured(llm_engine):
    import jsonschema

    out = llm_engine.generate(PROMPTS[:12], SamplingParams(max_tokens=96, response_format=schema_format()))
    for c in out:
        assert c.finish_reason == "stop", c.text
        jsonschema.validate(json.loads(c.text), SCHEMA)
    first = json.loads(out[0].text)
    assert list(first) == ["machine", "pressure", "parts"]  # the schema's property order
    assert out[0].text == json.dumps(first)                  # json.dumps separators, no free whitespace


def test_unconstrained_rows_in_the_same_batch_are_unchanged(llm_engine):
    plain = llm_engine.generate(PROMPTS[:3], SamplingParams(max_tokens=12))
    fmt = parse_response_format({"type": "json_object"})
    futures = [llm_engine.submit(llm_engine.encode_chat(p), SamplingParams(max_tokens=12, response_format=f))
               for p, f in zip(PROMPTS[:3], [None, fmt, None])]
    got = [f.result(timeout=120) for f in futures]
    assert got[0].token_ids == plain[0].token_ids and got[2].token_ids == plain[2].token_ids
    assert got[1].text.startswith("{")


@pytest.mark.parametrize("value,words", [
    ("json", "must be an object"),
    ({"type": "xml"}, "response_format.type must be one of text, json_object, json_schema, got 'xml'"),
    ({"type": "json_schema"}, "response_format.json_schema must be an object with a 'schema'"),
    ({"type": "json_schema", "json_schema": {"schema": []}}, "json_schema.schema must be a JSON Schema object"),
    ({"type": "json_schema", "json_schema": {"schema": {}, "format": 1}}, "unknown field(s) ['format']"),
    ({"type": "json_object", "schema": {}}, "unknown field(s) ['schema']"),
    ({"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": {"a": {"type": "strin"}}}}},
     "response_format.json_schema.schema cannot be used for constrained decoding"),
])
def test_bad_response_formats_name_the_field(value, words):
    with pytest.raises(ConfigError) as e:
        parse_response_format(value)
    assert words in str(e.value)


def test_text_format_means_unconstrained_and_engines_without_support_are_named():
    assert parse_response_format({"type": "text"}) is None

    class NoGrammar:
        structured_output = False

    with pytest.raises(ConfigError, match="engines that do: builtin.*llamacpp"):
        request_format(NoGrammar(), {"type": "json_object"})


def test_http_response_format_json_schema_and_streaming(http):
    body = {"messages": [{"role": "user", "content": "pump record"}], "max_tokens": 96,
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}}}
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    text = resp.json()["choices"][0]["message"]["content"]
    import jsonschema

    jsonschema.validate(json.loads(text), SCHEMA)
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    streamed = "".join(json.loads(x)["choices"][0]["delta"].get("content", "") for x in lines[:-1])
    assert streamed == text


def test_http_bad_response_format_is_400_naming_the_field(http):
    resp = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                                                   "response_format": {"type": "json_schema"}})
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["param"] == "response_format" and "json_schema must be an object" in err["message"]
