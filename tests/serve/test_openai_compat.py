"""What the official ``openai`` client sends, against real servers on 127.0.0.1: embeddings as base64
(its default), ``dimensions``, ``user``, ``input_type`` (a tuned embedder's query instruction) and
``stream_options.include_usage``."""
from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest

from ragtune.models.embedder import SentenceTransformerEmbedder

TEXTS = ["the pump pressure", "replace the filter every months"]


@pytest.fixture(scope="module")
def prompted_embedder_dir(tiny_embedder_dir, tmp_path_factory):
    """The tiny embedder saved with a query instruction, as `ragtune finetune embed` saves one."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_embedder_dir), device="cpu")
    model.prompts = {"query": "q: "}
    out = tmp_path_factory.mktemp("models") / "prompted-embedder"
    model.save(str(out))
    saved = json.loads((out / "config_sentence_transformers.json").read_text())
    assert saved["prompts"]["query"] == "q: "
    return out


@pytest.fixture(scope="module")
def embed_server(prompted_embedder_dir):
    from ragtune.serve.app import create_app
    from ragtune.serve.server import ServeConfig, ServerThread, build_engine

    engine = build_engine(ServeConfig(model=str(prompted_embedder_dir), device="cpu"))
    with ServerThread(create_app(engine), port=0) as srv:
        srv.engine = engine
        yield srv


def _post(srv, **body) -> dict:
    resp = httpx.post(srv.url + "/v1/embeddings", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _vectors(body: dict) -> np.ndarray:
    return np.array([d["embedding"] for d in body["data"]])


def test_base64_is_little_endian_float32_of_the_float_vectors(embed_server):
    floats = _vectors(_post(embed_server, input=TEXTS))
    b64 = _post(embed_server, input=TEXTS, encoding_format="base64")
    assert all(isinstance(d["embedding"], str) for d in b64["data"])
    decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in b64["data"]])
    assert decoded.shape == (2, 32)
    np.testing.assert_allclose(decoded, floats, atol=1e-6)


def test_dimensions_truncate_and_renormalise(embed_server):
    full = _vectors(_post(embed_server, input=TEXTS))
    short = _vectors(_post(embed_server, input=TEXTS, dimensions=8))
    assert short.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(short, full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True), atol=1e-6)
    b64 = _post(embed_server, input=TEXTS[0], dimensions=1, encoding_format="base64")
    assert abs(np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")).tolist() == [1.0]
    same = _vectors(_post(embed_server, input=TEXTS, dimensions=32))
    np.testing.assert_allclose(same, full, atol=1e-6)


def test_input_type_query_applies_the_saved_query_instruction(embed_server, prompted_embedder_dir):
    embedder = SentenceTransformerEmbedder.load(str(prompted_embedder_dir))
    queries, documents = embedder.embed_queries(TEXTS), embedder.embed_documents(TEXTS)
    assert not np.allclose(queries, documents, atol=1e-3)   # the instruction changes the vectors
    served_query = _post(embed_server, input=TEXTS, input_type="query")
    served_default = _vectors(_post(embed_server, input=TEXTS))
    served_doc = _vectors(_post(embed_server, input=TEXTS, input_type="document"))
    served_passage = _vectors(_post(embed_server, input=TEXTS, input_type="passage"))
    np.testing.assert_allclose(_vectors(served_query), queries, atol=1e-5)
    for got in (served_default, served_doc, served_passage):
        np.testing.assert_allclose(got, documents, atol=1e-5)
    # the usage counts the instruction's tokens too
    assert served_query["usage"]["prompt_tokens"] > _post(embed_server, input=TEXTS)["usage"]["prompt_tokens"]


def test_openai_client_embeddings(embed_server, prompted_embedder_dir):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=embed_server.url + "/v1", api_key="unused")
    embedder = SentenceTransformerEmbedder.load(str(prompted_embedder_dir))
    got = client.embeddings.create(model=embed_server.engine.name, input=TEXTS, user="u-1")   # base64 by default
    np.testing.assert_allclose([d.embedding for d in got.data], embedder.embed_documents(TEXTS), atol=1e-6)
    assert got.usage.prompt_tokens > 4
    short = client.embeddings.create(model=embed_server.engine.name, input=TEXTS[0], dimensions=4)
    assert len(short.data[0].embedding) == 4
    query = client.embeddings.create(model=embed_server.engine.name, input=[TEXTS[0]],
                                     extra_body={"input_type": "query"})
    np.testing.assert_allclose(query.data[0].embedding, embedder.embed_queries(TEXTS[:1])[0], atol=1e-6)
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=embed_server.engine.name, input=TEXTS[0], dimensions=64)
    assert err.value.body["param"] == "dimensions"


MSGS = [{"role": "user", "content": "what is the pump pressure"}]


def _sse_chunks(http, body: dict) -> list[dict]:
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(x) for x in lines[:-1]]


def test_stream_include_usage_sends_a_last_usage_chunk(http):
    plain = http.post("/v1/chat/completions", json={"messages": MSGS, "max_tokens": 6}).json()
    chunks = _sse_chunks(http, {"messages": MSGS, "max_tokens": 6, "stream": True,
                                "stream_options": {"include_usage": True}})
    *body, last = chunks
    assert last["choices"] == [] and last["usage"] == plain["usage"]
    assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + last["usage"]["completion_tokens"]
    assert all(c["usage"] is None and len(c["choices"]) == 1 for c in body)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in body)
    assert text == plain["choices"][0]["message"]["content"]
    without = _sse_chunks(http, {"messages": MSGS, "max_tokens": 6, "stream": True,
                                 "stream_options": {"include_usage": False}})
    assert all("usage" not in c and len(c["choices"]) == 1 for c in without)


def test_openai_client_stream_include_usage(llm_server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=llm_server.url + "/v1", api_key="unused")
    chunks = list(client.chat.completions.create(model=client.models.list().data[0].id, messages=MSGS,
                                                 max_tokens=5, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
