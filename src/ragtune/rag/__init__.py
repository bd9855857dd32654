"""RAG pieces with the names users know: Document, node groups, Retriever, stores, pipeline.

    import ragtune as rt
    docs = rt.Document("KB", embed="tuned-embed")             # a fine-tune output dir works as embed
    docs.create_node_group("split_sent", transform=lambda s: s.split("\\n"))
    with rt.pipeline() as ppl:
        ppl.retriever = rt.Retriever(docs, "split_sent", similarity="cosine", topk=1, output_format="content", join="")
        ppl.formatter = (lambda nodes, query: dict(context_str=nodes, query=query)) | rt.rag.bind(query=ppl.input)
        ppl.llm = rt.rag.LLM(llm).prompt(rt.rag.ChatPrompter(instruction, extra_keys=["context_str"]))
    ppl("question?")
"""
from __future__ import annotations

from ..models.embedder import CallableEmbedder, Embedder, SentenceTransformerEmbedder, as_embedder
from .document import ROOT, Document, Node
from .pipeline import Bound, ChatPrompter, Pipeline, PromptedLLM, bind, pipeline, with_prompt
from .retriever import BM25, Retriever
from .splitters import SPLITTERS, LineSplitter, SentenceSplitter, TokenSplitter
from .store import STORES, MemoryStore, MilvusStore, Store, as_store

LLM = PromptedLLM  # rt.rag.LLM(llm).prompt(ChatPrompter(...)): the chapter's llm.prompt(...) shape

__all__ = ["BM25", "Bound", "CallableEmbedder", "ChatPrompter", "Document", "Embedder", "LLM", "LineSplitter",
           "MemoryStore", "MilvusStore", "Node", "Pipeline", "PromptedLLM", "ROOT", "Retriever", "SPLITTERS",
           "STORES", "SentenceSplitter", "SentenceTransformerEmbedder", "Store", "TokenSplitter", "as_embedder",
           "as_store", "bind", "pipeline", "with_prompt"]
