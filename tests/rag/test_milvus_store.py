"""Milvus Lite: a real local .db file, round trip and persistence across processes."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("pymilvus")

from ragtune.rag import Document, MemoryStore, MilvusStore, Retriever

from .helpers import BowEmbedder

KB = ["pump pump valve", "pump filter", "oil oil oil", "station north pressure bar", "valve"]


def test_milvus_lite_round_trip_matches_memory(tmp_path):
    (tmp_path / "kb.txt").write_text("\n".join(KB))
    db = tmp_path / "store.db"
    results = {}
    for name, store in (("memory", MemoryStore()), ("milvus", MilvusStore(db))):
        doc = Document(tmp_path / "kb.txt", embed=BowEmbedder(), store=store)
        doc.create_node_group("lines", transform="line")
        results[name] = [(n.text, n.score) for n in Retriever(doc, "lines", topk=3)("pump valve")]
    assert [t for t, _ in results["milvus"]] == [t for t, _ in results["memory"]]
    assert [s for _, s in results["milvus"]] == pytest.approx([s for _, s in results["memory"]], abs=1e-4)
    assert db.exists()


def test_store_ids_add_delete(tmp_path):
    import numpy as np

    store = MilvusStore(tmp_path / "x.db")
    store.add("rt_test", ["a", "b"], np.eye(2, 4, dtype=np.float32), ["A", "B"])
    assert store.ids("rt_test") == {"a", "b"}
    assert store.search("rt_test", [1, 0, 0, 0], 2)[0][0] == "a"
    store.delete("rt_test", ["a"])
    assert store.ids("rt_test") == {"b"}
    assert store.ids("rt_absent") == set() and store.search("rt_absent", [1, 0, 0, 0], 1) == []


SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[3])
    from helpers import BowEmbedder
    from ragtune.rag import Document, MilvusStore, Retriever
    emb = BowEmbedder()
    doc = Document(sys.argv[1], embed=emb, store=MilvusStore(sys.argv[2]))
    doc.create_node_group("lines", transform="line")
    r = Retriever(doc, "lines", topk=2)
    nodes = r("station pressure")
    print(json.dumps({"embedded_nodes": r.embedded_last_sync, "texts": [n.text for n in nodes],
                      "scores": [n.score for n in nodes]}))
""")


def _run(kb, db, tmp_path):
    from pathlib import Path

    script = tmp_path / "persist.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(kb), str(db), str(Path(__file__).parent)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_milvus_lite_persists_vectors_across_runs(tmp_path):
    kb = tmp_path / "kb.txt"
    kb.write_text("\n".join(KB))
    db = tmp_path / "persist.db"
    first = _run(kb, db, tmp_path)
    second = _run(kb, db, tmp_path)
    assert first["embedded_nodes"] == len(KB)
    assert second["embedded_nodes"] == 0                    # vectors came from the file
    assert second["texts"] == first["texts"] and first["texts"][0] == "station north pressure bar"
    assert second["scores"] == pytest.approx(first["scores"], abs=1e-5)
    kb.write_text("\n".join(KB[:-1] + ["station pressure"]))   # one line changed: only it is embedded
    third = _run(kb, db, tmp_path)
    assert third["embedded_nodes"] == 1 and third["texts"][0] == "station pressure"
