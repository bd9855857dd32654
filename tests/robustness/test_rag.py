"""The RAG side against bad knowledge bases and stores: unreadable files are skipped with a counted
warning (not an abort, not silence), chunks the embedder would truncate are counted, a plain
callable embedder keeps its Milvus collection across processes, and a locked or misplaced Milvus
Lite file is a clear error."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import pytest

from ragtune.core.errors import BackendError, DataError
from ragtune.rag import Document, Retriever


@pytest.fixture
def warnings_log():
    """Records of ragtune's loggers (attached directly: the CLI may have turned propagation off)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(level=logging.WARNING)
    logger = logging.getLogger("ragtune")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def bad_kb(root):
    (root / "good.txt").write_text("the pump runs at 4 bar\nreplace the filter every 6 months\n")
    (root / "notes.md").write_text("# valve\nthe north valve\n")
    (root / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (root / "chinese-gbk.txt").write_bytes("泵的压力是四巴".encode("gbk"))
    (root / "nul.txt").write_bytes(b"looks like text\x00\x00but is not")
    (root / "broken.json").write_text('[{"content": "x"}, ')
    (root / "no-text.jsonl").write_text(json.dumps({"title": "no text field"}) + "\n")
    return root


def test_unreadable_files_of_a_kb_directory_are_skipped_and_counted(tmp_path, warnings_log):
    doc = Document(bad_kb(tmp_path))
    texts = sorted(n.text for n in doc.nodes())
    assert texts == ["# valve\nthe north valve\n", "the pump runs at 4 bar\nreplace the filter every 6 months\n"]
    skipped = dict(doc.skipped)
    assert set(skipped) == {"image.txt", "chinese-gbk.txt", "nul.txt", "broken.json", "no-text.jsonl"}
    assert "not UTF-8" in skipped["image.txt"] and "not UTF-8" in skipped["chinese-gbk.txt"]
    assert "binary" in skipped["nul.txt"] and "not valid JSON" in skipped["broken.json"]
    assert "record 0" in skipped["no-text.jsonl"] and "'content'" in skipped["no-text.jsonl"]
    warning = [r.getMessage() for r in warnings_log if "skipped" in r.getMessage()]
    assert len(warning) == 1 and "skipped 5 of 7 files" in warning[0] and "image.txt" in warning[0]


def test_a_single_bad_file_or_an_all_bad_directory_is_an_error(tmp_path):
    bad_kb(tmp_path)
    with pytest.raises(DataError, match="image.txt.*not UTF-8"):
        Document(tmp_path / "image.txt").nodes()
    only_bad = tmp_path / "only-bad"
    only_bad.mkdir()
    (only_bad / "a.txt").write_bytes(b"\xff\xfe\x00")
    (only_bad / "b.json").write_text("{")
    with pytest.raises(DataError, match=r"none of its 2 files could be read.*a.txt.*b.json"):
        Document(only_bad).nodes()


def test_kb_files_read_like_every_other_data_file(tmp_path):
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfthe pump")
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": [{"text": "the valve"}, "the filter"]}))
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps({"content": "the station"}).encode() + b"\n")
    assert sorted(n.text for n in Document(tmp_path).nodes()) == ["the filter", "the pump", "the station",
                                                                   "the valve"]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"content": "ok"}) + "\n{oops\n")
    with pytest.raises(DataError, match=r"bad.jsonl.*line 2"):
        Document(tmp_path / "bad.jsonl").nodes()


def test_chunks_longer_than_the_embedder_reads_are_counted_and_warned(tmp_path, tiny_embedder_dir, warnings_log):
    """The tiny embedder reads 128 tokens: a 400-word paragraph's tail would never affect
    retrieval. Seen before: silent. Now: counted, warned once with the numbers and the fix."""
    from ragtune.models.embedder import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder.load(str(tiny_embedder_dir))
    long = " ".join(["pump pressure valve"] * 150)
    (tmp_path / "kb.txt").write_text(f"short line about the pump\n{long}\nthe north station\n")
    doc = Document(tmp_path / "kb.txt", embed=emb)
    doc.create_node_group("lines", transform="line")
    ret = Retriever(doc, "lines", topk=2)
    ret("pump")
    assert ret.over_long == 1
    msgs = [r.getMessage() for r in warnings_log if "longer than the embedding model" in r.getMessage()]
    assert len(msgs) == 1
    n_tokens = emb.token_counts([long])[0]
    assert "1 of 3 node group 'lines'" in msgs[0] and "limit of 128 tokens" in msgs[0]
    assert f"longest {n_tokens}" in msgs[0] and "transform='token'" in msgs[0]
    ret(long)          # an over-long query: warned once per retriever
    ret(long)
    queries = [r.getMessage() for r in warnings_log if "queries are longer" in r.getMessage()]
    assert len(queries) == 1 and "1 of 1 queries" in queries[0]
    # split as the warning says: nothing is over the limit any more
    doc.create_node_group("windows", transform="token", parent="lines", chunk_size=126, overlap=16,
                          tokenizer=str(tiny_embedder_dir))
    windows = Retriever(doc, "windows", topk=2)
    windows("pump")
    assert windows.over_long == 0 and max(emb.token_counts([n.text for n in doc.nodes("windows")])) <= 128


CALLABLE_KB = textwrap.dedent("""
    import sys
    import numpy as np
    from ragtune.rag import Document, Retriever

    def embed(texts):                 # a plain function: no fingerprint attribute
        return np.array([[t.count("pump") + 1.0, t.count("valve") + 1.0, len(t) % 7 + 1.0] for t in texts])

    doc = Document(sys.argv[1], embed=embed, store=sys.argv[2])
    ret = Retriever(doc, topk=1)
    top = ret("pump")
    print(ret.embedded_last_sync, doc.embedder.fingerprint(), top[0].text.strip())
""")


def test_a_plain_callable_embedder_reuses_its_milvus_collection_across_processes(tmp_path):
    """Seen before: a callable's fingerprint changed every process, so every run added a new
    Milvus Lite collection. The probe-hash fingerprint is stable: the second process embeds 0."""
    (tmp_path / "kb.txt").write_text("the pump\n")
    (tmp_path / "kb2.txt").write_text("the valve\n")
    script = tmp_path / "kb.py"
    script.write_text(CALLABLE_KB)
    kb, db = str(tmp_path / "kb.txt"), str(tmp_path / "store.db")
    runs = [subprocess.run([sys.executable, str(script), kb, db], capture_output=True, text=True, timeout=180)
            for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
    (first_n, first_fp, _), (second_n, second_fp, _) = (r.stdout.split()[:3] for r in runs)
    assert first_n == "1" and second_n == "0" and first_fp == second_fp
    changed = script.read_text().replace("len(t) % 7", "len(t) % 5")
    script.write_text(changed)
    third = subprocess.run([sys.executable, str(script), kb, db], capture_output=True, text=True, timeout=180)
    assert third.returncode == 0 and third.stdout.split()[1] != first_fp and third.stdout.split()[0] == "1"


def test_milvus_lite_locked_or_misplaced_is_a_clear_error(tmp_path):
    from ragtune.rag.store import MilvusStore

    db = tmp_path / "kb.db"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from ragtune.rag.store import MilvusStore
        s = MilvusStore({str(db)!r})
        s.add("c", ["a"], [[1.0, 0.0]], ["t"])
        print("open", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(BackendError) as exc:
            MilvusStore(db)
        assert str(db) in str(exc.value) and "locked by another process" in str(exc.value)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    (tmp_path / "file.db").write_text("not a milvus dir")
    with pytest.raises(BackendError, match=r"file.db exists but is a file"):
        MilvusStore(tmp_path / "file.db")
    with pytest.raises(BackendError, match=r"/proc/self/x.db: /proc/self is not writable"):
        MilvusStore("/proc/self/x.db")
