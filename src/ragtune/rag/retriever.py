"""``Retriever``: top-k nodes of one node group for a query, best first, with their scores."""
from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from typing import Any, Literal, cast

from ..core.errors import ConfigError
from ..core.log import get_logger
from .document import ROOT, Document, Node

log = get_logger(__name__)
_WORD = re.compile(r"\w+", re.UNICODE)


def bm25_tokens(text: str) -> list[str]:
    """Lower-cased words; Chinese runs cut into words by jieba."""
    out: list[str] = []
    for tok in _WORD.findall(text.lower()):
        if re.search(r"[\u4e00-\u9fff]", tok):
            import jieba

            out.extend(w for w in jieba.cut(tok) if w.strip())
        else:
            out.append(tok)
    return out


class BM25:
    """Okapi BM25 (k1=1.5, b=0.75). By hand: ~15 lines, and no BM25 package is a ragtune dependency."""

    def __init__(self, texts: list[str], k1: float = 1.5, b: float = 0.75):
        self.k1, self.b = k1, b
        self.docs = [Counter(bm25_tokens(t)) for t in texts]
        self.lens = [sum(d.values()) for d in self.docs]
        self.avg = sum(self.lens) / max(len(self.lens), 1) or 1.0
        df = Counter(w for d in self.docs for w in d)
        n = len(self.docs)
        self.idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in df.items()}

    def scores(self, query: str) -> list[float]:
        q = bm25_tokens(query)
        out = []
        for d, length in zip(self.docs, self.lens):
            s = 0.0
            for w in q:
                tf = d.get(w, 0)
                if tf:
                    s += self.idf[w] * tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * length / self.avg))
            out.append(s)
        return out


def _warn_over_long(embedder: Any, texts: list[str], what: str, query: bool = False) -> int:
    """How many ``texts`` are longer than the embedder reads, warned with counts: the model
    truncates them, so their tail never affects retrieval. (Splitting is the user's choice of
    node group: a TokenSplitter of the model's length, see docs/rag.md.)"""
    limit = getattr(embedder, "max_seq_length", None)
    counts = embedder.token_counts(texts, query=query) if limit else None
    if not counts or not limit:
        return 0
    over = [n for n in counts if n > limit]
    if over:
        log.warning("%d of %d %s are longer than the embedding model's limit of %d tokens (longest %d): only "
                    "their first %d tokens affect retrieval; split them, e.g. create_node_group(name, "
                    "transform='token', chunk_size=%d, tokenizer=<the embedding model dir>)", len(over),
                    len(texts), what, limit, max(over), limit, limit - 2)
    return len(over)


class Retriever:
    def __init__(self, doc: Document, group_name: str = ROOT, similarity: Literal["cosine", "bm25"] = "cosine",
                 topk: int = 6, similarity_cut_off: float = float("-inf"),
                 output_format: Literal["content", "dict"] | None = None, join: bool | str = False,
                 embed_batch_size: int = 64):
        if similarity not in ("cosine", "bm25"):
            raise ConfigError(f"unknown similarity '{similarity}'", hint="valid: cosine, bm25")
        if output_format not in (None, "content", "dict"):
            raise ConfigError(f"unknown output_format '{output_format}'", hint="valid: None, 'content', 'dict'")
        if join not in (False, None) and output_format != "content":
            raise ConfigError("join needs output_format='content' (it joins the texts)")
        if topk < 1:
            raise ConfigError(f"topk must be >= 1, got {topk}")
        if group_name not in doc.group_names():
            raise ConfigError(f"unknown node group '{group_name}'", hint="valid: " + ", ".join(doc.group_names()))
        self.doc, self.group_name, self.similarity = doc, group_name, similarity
        self.topk, self.similarity_cut_off = topk, similarity_cut_off
        self.output_format, self.join = output_format, join
        self.embed_batch_size = embed_batch_size
        self._fingerprint: str | None = None
        self._bm25: BM25 | None = None
        self.embedded_last_sync = 0
        self.over_long = 0   # nodes of this group longer than the embedder reads (see _warn_over_long)
        self._queries_warned = False

    # -- index ---------------------------------------------------------------------------------
    def collection(self, fingerprint: str) -> str:
        h = hashlib.sha1(f"{self.doc.key}|{self.group_name}|{fingerprint}".encode()).hexdigest()[:24]
        return f"rt_{h}"

    def _sync(self, force: bool = False) -> None:
        """Embed the nodes the store lacks for the current embedder (each node once), drop stale ones."""
        if self._fingerprint is not None and not force:
            return
        embedder = self.doc.embedder
        fp = embedder.fingerprint()
        if fp == self._fingerprint:
            self.embedded_last_sync = 0
            return
        coll = self.collection(fp)
        nodes = self.doc.nodes(self.group_name)
        have = self.doc.store.ids(coll)
        missing = [n for n in nodes if n.id not in have]
        stale = have - {n.id for n in nodes}
        if stale:
            self.doc.store.delete(coll, list(stale))
        if missing:
            self.over_long = _warn_over_long(embedder, [n.text for n in missing], f"node group '{self.group_name}'")
            from tqdm.auto import tqdm

            step = self.embed_batch_size
            with tqdm(total=len(missing), desc=f"embedding {self.group_name}", unit="node",
                      disable=len(missing) < 2 * step) as bar:
                for i in range(0, len(missing), step):
                    chunk = missing[i:i + step]
                    vecs = embedder.embed_documents([n.text for n in chunk])
                    self.doc.store.add(coll, [n.id for n in chunk], vecs, [n.text for n in chunk])
                    bar.update(len(chunk))
        self.embedded_last_sync = len(missing)
        self._fingerprint = fp
        self._coll = coll

    def _check_queries(self, queries: list[str]) -> None:
        if not self._queries_warned and _warn_over_long(self.doc.embedder, queries, "queries",
                                                                           query=True):
            self._queries_warned = True   # once per retriever: a log line per query would drown the log

    def update(self) -> "Retriever":
        """Re-embed if the embed model changed. A TrainableModule embed is updated first (fine-tuned
        when in finetune mode), then its new weights are used."""
        source = self.doc.embed_source
        if hasattr(source, "update") and hasattr(source, "model_path"):
            source.update()
            self.doc.reload_embedder()
        if self.similarity == "bm25":
            self._bm25 = None
            return self
        self._sync(force=True)
        return self

    # -- query ---------------------------------------------------------------------------------
    def retrieve(self, query: str) -> list[Node]:
        """Nodes with ``.score``, best first, at most ``topk``, none below ``similarity_cut_off``."""
        nodes = {n.id: n for n in self.doc.nodes(self.group_name)}
        if self.similarity == "bm25":
            if self._bm25 is None:
                self._bm25_nodes = list(nodes.values())
                self._bm25 = BM25([n.text for n in self._bm25_nodes])
            scored = sorted(zip(self._bm25_nodes, self._bm25.scores(query)), key=lambda x: -x[1])[:self.topk]
            hits = [(n.id, s) for n, s in scored]
        else:
            self._sync()
            self._check_queries([query])
            qvec = self.doc.embedder.embed_queries([query])[0]
            hits = self.doc.store.search(self._coll, qvec, self.topk)
        out = [nodes[i].with_score(s) for i, s in hits if i in nodes and s >= self.similarity_cut_off]
        out.sort(key=lambda n: -cast(float, n.score))   # with_score set it
        return out

    def retrieve_many(self, queries: list[str]) -> list[list[Node]]:
        """``retrieve`` for many queries, embedding them in batches."""
        if self.similarity == "bm25":
            return [self.retrieve(q) for q in queries]
        self._sync()
        self._check_queries(queries)
        nodes = {n.id: n for n in self.doc.nodes(self.group_name)}
        out = []
        for start in range(0, len(queries), self.embed_batch_size):
            qvecs = self.doc.embedder.embed_queries(queries[start:start + self.embed_batch_size])
            for qvec in qvecs:
                hits = self.doc.store.search(self._coll, qvec, self.topk)
                found = [nodes[i].with_score(s) for i, s in hits if i in nodes and s >= self.similarity_cut_off]
                out.append(sorted(found, key=lambda n: -cast(float, n.score)))
        return out

    def __call__(self, query: str) -> Any:
        nodes = self.retrieve(query)
        if self.output_format == "content":
            texts = [n.text for n in nodes]
            if self.join is not False and self.join is not None:
                return ("" if self.join is True else str(self.join)).join(texts)
            return texts
        if self.output_format == "dict":
            return [n.to_dict() for n in nodes]
        return nodes

    def __repr__(self) -> str:
        return (f"Retriever(group={self.group_name!r}, similarity={self.similarity!r}, topk={self.topk}, "
                f"cut_off={self.similarity_cut_off})")
