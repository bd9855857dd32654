"""Slow: the real bundled all-MiniLM-L6-v2 (RAGTUNE_SLOW=1)."""
from __future__ import annotations

import pytest

from ragtune.rag import Document, Retriever


@pytest.mark.slow
def test_minilm_retrieves_the_semantic_match(tmp_path):
    (tmp_path / "kb.txt").write_text(
        "Replace the hydraulic filter every six months.\nThe cafeteria opens at 8 am.\n"
        "Revenue grew 12% year over year, driven by cloud services.\n")
    doc = Document(tmp_path / "kb.txt", embed="all-MiniLM-L6-v2")
    doc.create_node_group("lines", transform="line")
    r = Retriever(doc, "lines", topk=3)
    nodes = r("How much did sales increase compared to last year?")
    assert nodes[0].text.startswith("Revenue grew") and nodes[0].score > nodes[1].score + 0.1
    assert r("When should I change the filter?")[0].text.startswith("Replace the hydraulic filter")
