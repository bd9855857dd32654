from __future__ import annotations

import numpy as np
import pytest

from ragtune.core.errors import ConfigError
from ragtune.rag import Document, Retriever

from .helpers import VOCAB, BowEmbedder

KB = ["pump pump valve", "pump filter", "oil oil oil", "station north pressure bar", "valve"]


@pytest.fixture
def kb(tmp_path):
    (tmp_path / "kb.txt").write_text("\n".join(KB) + "\n")
    return tmp_path / "kb.txt"


def _cos(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_results_sorted_by_score_with_scores_exposed(kb):
    emb = BowEmbedder()
    doc = Document(kb, embed=emb)
    doc.create_node_group("lines", transform="line")
    nodes = Retriever(doc, "lines", topk=3)("pump valve")
    assert [n.text for n in nodes] == ["pump pump valve", "valve", "pump filter"]
    q = emb(["pump valve"])[0]
    expected = [_cos(q, emb([t])[0]) for t in ("pump pump valve", "valve", "pump filter")]
    assert [n.score for n in nodes] == pytest.approx(expected, abs=1e-5)
    assert nodes[0].score > nodes[1].score > nodes[2].score


def test_cut_off_and_output_formats(kb):
    doc = Document(kb, embed=BowEmbedder())
    doc.create_node_group("lines", transform="line")
    all_nodes = Retriever(doc, "lines", topk=5)("pump valve")
    cut = all_nodes[1].score - 1e-6
    kept = Retriever(doc, "lines", topk=5, similarity_cut_off=cut)("pump valve")
    assert [n.text for n in kept] == [n.text for n in all_nodes[:2]]
    assert Retriever(doc, "lines", topk=5, similarity_cut_off=1.1)("pump valve") == []
    assert Retriever(doc, "lines", topk=1, output_format="content")("oil") == ["oil oil oil"]
    assert Retriever(doc, "lines", topk=1, output_format="content", join="")("oil") == "oil oil oil"
    assert Retriever(doc, "lines", topk=2, output_format="content", join=" | ")("pump valve") == "pump pump valve | valve"
    d = Retriever(doc, "lines", topk=1, output_format="dict")("oil")[0]
    assert d["content"] == "oil oil oil" and d["score"] > 0.99 and d["metadata"]["source"] == "kb.txt"
    with pytest.raises(ConfigError, match="join needs"):
        Retriever(doc, "lines", join="")
    with pytest.raises(ConfigError, match="unknown node group"):
        Retriever(doc, "nope")
    with pytest.raises(ConfigError, match="unknown similarity"):
        Retriever(doc, "lines", similarity="dot")


def test_embeddings_cached_and_update_reembeds_only_on_change(kb):
    emb = BowEmbedder()
    doc = Document(kb, embed=emb)
    doc.create_node_group("lines", transform="line")
    r = Retriever(doc, "lines", topk=1)
    r("pump")
    r("oil")
    assert emb.texts_embedded == len(KB) + 2            # nodes once, then one per query
    r.update()                                           # same model: nothing re-embedded
    assert r.embedded_last_sync == 0
    Retriever(doc, "lines", topk=1)("valve")             # another retriever on the same store reuses vectors
    assert emb.texts_embedded == len(KB) + 3
    before = {n.text: n.score for n in Retriever(doc, "lines", topk=5)("pump filter")}
    emb.weights[VOCAB_INDEX["pump"]] = 0.0               # "fine-tuned": vectors change
    emb.version += 1
    r.update()
    assert r.embedded_last_sync == len(KB)
    after = {n.text: n.score for n in Retriever(doc, "lines", topk=5)("pump filter")}
    q = emb(["pump filter"])[0]
    assert after == pytest.approx({t: _cos(q, emb([t])[0]) for t in KB}, abs=1e-5)
    assert after["pump pump valve"] < before["pump pump valve"] - 0.3


VOCAB_INDEX = {w: i for i, w in enumerate(VOCAB)}


def test_bm25_ordering(tmp_path):
    (tmp_path / "kb.txt").write_text("the pump is broken\nreplace the oil filter every month\n北京的天气很好\n")
    doc = Document(tmp_path / "kb.txt")
    doc.create_node_group("lines", transform="line")
    r = Retriever(doc, "lines", similarity="bm25", topk=3)
    nodes = r("oil filter")
    assert nodes[0].text.startswith("replace the oil filter") and nodes[0].score > nodes[1].score
    assert r("北京天气")[0].text == "北京的天气很好"


def test_tiny_sentence_transformer_and_finetune_dir_as_embed(kb, tiny_embedder_dir):
    from sentence_transformers import SentenceTransformer

    doc = Document(kb, embed=str(tiny_embedder_dir))
    doc.create_node_group("lines", transform="line")
    by_path = Retriever(doc, "lines", topk=5)("pump valve")
    doc2 = Document(kb, embed=SentenceTransformer(str(tiny_embedder_dir), device="cpu"))
    doc2.create_node_group("lines", transform="line")
    by_model = Retriever(doc2, "lines", topk=5)("pump valve")
    assert [n.text for n in by_path] == [n.text for n in by_model]
    assert [n.score for n in by_path] == pytest.approx([n.score for n in by_model], abs=1e-5)
    assert all(a.score >= b.score for a, b in zip(by_path, by_path[1:]))
