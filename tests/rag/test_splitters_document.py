from __future__ import annotations

import json

import pytest

from ragtune.core.errors import ConfigError, DataError
from ragtune.rag import Document, LineSplitter, SentenceSplitter, TokenSplitter


def test_line_splitter_drops_empty_lines():
    assert LineSplitter()("a\n\n b \nc") == ["a", "b", "c"]


def test_sentence_splitter_chinese_and_english():
    text = "北京是首都。上海很大！你去过吗？Yes. It is big! Really?"
    assert SentenceSplitter()(text) == ["北京是首都。", "上海很大！", "你去过吗？", "Yes.", "It is big!", "Really?"]
    packed = SentenceSplitter(max_chars=12)("北京是首都。上海很大！你去过吗？")
    assert packed == ["北京是首都。上海很大！", "你去过吗？"]


def test_token_splitter_windows_overlap():
    text = " ".join(f"w{i}" for i in range(10))
    chunks = TokenSplitter(chunk_size=4, overlap=1)(text)
    assert chunks == ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]
    assert TokenSplitter(chunk_size=4, overlap=0)("a b") == ["a b"]
    with pytest.raises(ConfigError):
        TokenSplitter(chunk_size=4, overlap=4)


def test_token_splitter_with_a_real_tokenizer(tiny_embedder_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_embedder_dir))
    text = "the pump valve model serial answer question paragraph filter replace"
    chunks = TokenSplitter(chunk_size=3, overlap=1, tokenizer=tok)(text)
    assert chunks[0] == "the pump valve" and chunks[1].startswith("valve")
    assert all(c in text for c in chunks)


def test_document_loads_txt_md_json_jsonl_and_groups(tmp_path):
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "a.txt").write_text("line one\nline two\n")
    (kb / "b.md").write_text("# title\nbody")
    (kb / "c.json").write_text(json.dumps([{"content": "json one"}, "json two"]))
    (kb / "d.jsonl").write_text(json.dumps({"text": "jl one"}) + "\n")
    (kb / ".hidden.txt").write_text("ignored")
    doc = Document(kb)
    roots = doc.nodes()
    assert [n.text for n in roots] == ["line one\nline two\n", "# title\nbody", "json one", "json two", "jl one"]
    doc.create_node_group("lines", transform=lambda s: s.split("\n"))
    doc.create_node_group("words", transform="token", parent="lines", chunk_size=1, overlap=0)
    lines = doc.nodes("lines")
    assert [n.text for n in lines][:4] == ["line one", "line two", "# title", "body"]
    assert all(n.parent in {r.id for r in roots} for n in lines)
    assert doc.nodes("words")[0].text == "line" and doc.nodes("words")[0].metadata["source"] == "a.txt"
    assert Document(kb).nodes()[0].id == roots[0].id            # stable ids across loads
    with pytest.raises(ConfigError, match="parent node group 'nope'"):
        doc.create_node_group("x", transform="line", parent="nope")
    with pytest.raises(ConfigError, match="unknown splitter"):
        doc.create_node_group("y", transform="paragraphs")


def test_document_bad_json_names_file_and_record(tmp_path):
    (tmp_path / "kb.json").write_text(json.dumps(["ok", {"title": "no text"}]))
    with pytest.raises(DataError) as err:
        Document(tmp_path / "kb.json").nodes()
    assert "kb.json" in err.value.message and "record 1" in err.value.message and "'content'" in err.value.message
    with pytest.raises(DataError, match="does not exist"):
        Document(tmp_path / "missing")


def test_pdf_without_pypdf_says_how_to_fix(tmp_path):
    import importlib.util

    from ragtune.core.errors import BackendError

    (tmp_path / "manual.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    if importlib.util.find_spec("pypdf") is None:
        with pytest.raises(BackendError, match="pip install pypdf"):
            Document(tmp_path).nodes()
    with pytest.raises(DataError, match="no .txt/.md/.json/.jsonl/.pdf files"):
        (tmp_path / "manual.pdf").unlink()
        Document(tmp_path).nodes()
