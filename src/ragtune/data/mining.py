"""``ragtune data mine-negatives``: replace random negatives with hard ones found by an embedder.

For each training row ``{query, pos, neg?, prompt?}``:
1. embed the query (with its ``prompt`` prefix, as the retriever will) and the corpus (every
   distinct pos/neg passage of the file, plus an optional extra corpus file);
2. take candidates ranked ``range`` (e.g. 10-100: skipping the top ranks, where unlabeled true
   positives hide);
3. drop candidates that are a positive, or whose score is within ``margin`` of the weakest
   positive's score (score >= pos_score - margin): too close to be a safe negative;
4. sample ``neg_num`` of the rest (seeded); top up with random corpus passages that pass the same
   guard when too few remain.
Exact search: numpy matmul for small corpora, faiss (IndexFlatIP) when installed and the corpus
has at least ``faiss_min_corpus`` passages.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import Field, field_validator

from ..core.config import Config
from ..core.errors import ConfigError, DataError
from ..core.io import atomic_write_jsonl
from ..core.log import get_logger
from .readers import read_rows
from .summary import Summary

log = get_logger(__name__)


class MineNegativesConfig(Config):
    # Optional in the schema only because the shared CLI-flag generator cannot show a required
    # field yet; mine_negatives() refuses to run without it.
    model: str | None = Field(None, description="Embedding model (name, local dir or HF id). Required.")
    range: str = Field("10-100", description="Candidate rank range START-END (0-based, END exclusive).")
    margin: float = Field(0.1, description="Drop candidates scoring >= positive score - margin.")
    neg_num: int = Field(10, ge=0, description="Negatives per row.")
    seed: int = Field(1314, description="Seed for sampling among candidates and top-ups.")
    backend: Literal["auto", "numpy", "faiss"] = Field("auto", description="Nearest-neighbour search.")
    faiss_min_corpus: int = Field(5000, description="auto uses faiss from this corpus size on (if installed).")
    batch_size: int = Field(64, description="Embedding batch size.")
    corpus: str | None = Field(None, description="Extra passages: .txt (one per line) or JSON/JSONL rows with 'text'.")
    use_prompt: bool = Field(True, description="Prefix each query with its row's 'prompt' when embedding.")

    @field_validator("range")
    @classmethod
    def _check_range(cls, v: str) -> str:
        parse_range(v)
        return v


def parse_range(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) >= int(m.group(2)):
        raise ValueError(f"range must look like START-END with START < END (0-based ranks), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def top_k(queries: Any, corpus: Any, k: int, backend: str = "numpy") -> tuple[Any, Any]:
    """(scores, indices) of the k best corpus rows per query by inner product, best first."""
    import numpy as np

    k = min(k, corpus.shape[0])
    if backend == "faiss":
        import faiss

        index = faiss.IndexFlatIP(corpus.shape[1])
        index.add(np.ascontiguousarray(corpus, dtype=np.float32))
        return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    scores = queries @ corpus.T
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part_scores, order, axis=1), np.take_along_axis(part, order, axis=1)


def _choose_backend(cfg: MineNegativesConfig, n_corpus: int) -> str:
    if cfg.backend == "faiss" and not faiss_available():
        raise ConfigError("backend 'faiss' needs faiss-cpu", hint="pip install faiss-cpu, or --backend numpy")
    if cfg.backend == "auto":
        return "faiss" if faiss_available() and n_corpus >= cfg.faiss_min_corpus else "numpy"
    return cfg.backend


def _read_extra_corpus(path: str) -> list[str]:
    p = Path(path)
    if p.suffix == ".txt":
        return [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = []
    for r in read_rows(p):
        if not isinstance(r.data.get("text"), str):
            raise DataError("corpus rows need a string 'text'", file=path, record=r.index, field="text")
        texts.append(r.data["text"])
    return texts


def _load_rows(path: str | os.PathLike) -> list[dict]:
    file = str(path)
    rows = []
    for r in read_rows(path):
        d = r.data
        if not isinstance(d.get("query"), str) or not d["query"].strip():
            raise DataError("must be a non-empty string", file=file, record=r.index, field="query")
        pos = d.get("pos")
        if not isinstance(pos, list) or not pos or not all(isinstance(p, str) for p in pos):
            raise DataError("must be a non-empty list of strings", file=file, record=r.index, field="pos")
        neg = d.get("neg") or []
        if not isinstance(neg, list) or not all(isinstance(p, str) for p in neg):
            raise DataError("must be a list of strings", file=file, record=r.index, field="neg")
        rows.append(d)
    return rows


def encode(model: Any, texts: list[str], batch_size: int):
    return model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                        show_progress_bar=len(texts) > batch_size * 4)


def load_embedder(ref: str):
    from ..models.loading import load_sentence_transformer

    return load_sentence_transformer(ref)


def mine_negatives(path: str | os.PathLike, out: str | os.PathLike, config: MineNegativesConfig | None = None,
                   *, embedder: Any = None, **kwargs) -> Summary:
    """Mine hard negatives for the rows of ``path`` into ``out`` (JSONL). ``embedder`` may be a
    loaded SentenceTransformer (else ``config.model`` is resolved and loaded)."""
    import numpy as np

    cfg = config or MineNegativesConfig.build(**kwargs)
    if not cfg.model and embedder is None:
        raise ConfigError("mine-negatives needs an embedding model", hint="--model all-MiniLM-L6-v2 (or a local dir)")
    lo, hi = parse_range(cfg.range)
    rows = _load_rows(path)
    summary = Summary("mine-negatives", str(path), str(out), records_in=len(rows))
    corpus = list(dict.fromkeys([p for r in rows for p in r["pos"]] + [p for r in rows for p in r.get("neg") or []]
                                + (_read_extra_corpus(cfg.corpus) if cfg.corpus else [])))
    backend = _choose_backend(cfg, len(corpus))
    model = embedder or load_embedder(cast(str, cfg.model))   # cfg.model is set when no embedder (checked above)
    corpus_emb = encode(model, corpus, cfg.batch_size)
    queries = [(r.get("prompt") or "") + r["query"] if cfg.use_prompt else r["query"] for r in rows]
    query_emb = encode(model, queries, cfg.batch_size)
    pos_ids = {t: i for i, t in enumerate(corpus)}
    scores, ranked = top_k(query_emb, corpus_emb, hi, backend)
    rng = np.random.default_rng(cfg.seed)
    out_rows, short, dropped_margin = [], 0, 0
    for qi, row in enumerate(rows):
        own = {p.strip() for p in row["pos"]}
        pos_score = min(float(query_emb[qi] @ corpus_emb[pos_ids[p]]) for p in row["pos"])
        threshold = pos_score - cfg.margin

        def safe(ci: int, score: float, own=own, threshold=threshold) -> bool:
            return corpus[ci].strip() not in own and score < threshold

        candidates = []
        for ci, s in zip(ranked[qi][lo:hi].tolist(), scores[qi][lo:hi].tolist()):
            if corpus[ci].strip() in own:
                continue
            if s >= threshold:
                dropped_margin += 1
                continue
            candidates.append(ci)
        picked = [candidates[i] for i in rng.permutation(len(candidates))[:cfg.neg_num]] \
            if len(candidates) > cfg.neg_num else candidates
        if len(picked) < cfg.neg_num:   # top up with random passages that pass the same guard
            all_scores = corpus_emb @ query_emb[qi]
            for ci in rng.permutation(len(corpus)).tolist():
                if len(picked) == cfg.neg_num:
                    break
                if ci not in picked and safe(ci, float(all_scores[ci])):
                    picked.append(ci)
        if len(picked) < cfg.neg_num:
            short += 1
            summary.note_example("rows with fewer negatives than neg_num", f"record {qi}")
        out_rows.append({**row, "neg": [corpus[ci] for ci in picked]})
    atomic_write_jsonl(out, out_rows)
    summary.records_out = len(out_rows)
    summary.notes.update({"corpus passages": len(corpus), "search backend": backend,
                          "candidates dropped by margin": dropped_margin,
                          "rows with fewer negatives than neg_num": short})
    return summary
