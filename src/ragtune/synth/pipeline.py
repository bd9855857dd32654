"""``ragtune data synth DOCS --teacher URL|MODEL --output DIR``: from a folder of documents to the
training and eval sets of both RAG models, with no labelled data.

1. Documents are read and chunked by the loaders and splitters of ``rt.Document`` (txt, md, json,
   jsonl, pdf; one chunk = sentences packed up to ``chunk_chars`` by default).
2. The teacher writes ``questions_per_chunk`` questions per chunk whose answers are verbatim spans,
   in the chunk's language (the built-in zh/en prompts are files: ``prompt_file`` replaces them).
3. Filters, each rejection counted with its reason: unparseable output (after ``parse_retries``
   re-asks), empty, answer not a verbatim span of the chunk, answer too long, question containing
   its answer, near-duplicate questions (rapidfuzz), optionally the round trip (the chunk must be
   in the embedder's top-``roundtrip_k`` for its question).
4. Documents are split into train and eval (no document on both sides), and one pass writes:

   - ``sft.json``: Alpaca, instruction = the CMRC template (zh/en) over the chunk and question;
   - ``embed_train.jsonl``: ``{query, pos: [chunk], neg: [...], prompt}``, negatives mined by the
     embedder from the other train chunks (random ones when ``embed`` is None);
   - ``eval.json``: ``{id, question, answers, all_answers, context, doc}`` (the eval documents);
   - ``eval_retrieval.jsonl``: ``{query, corpus: [chunk]}`` for ``ragtune eval retrieval``;
   - ``kb/chunks.txt``: every chunk of every document, one per line (the RAG knowledge base);
   - ``summary.json``: counts, rejections by reason, the teacher, the split.

``review=True`` writes ``review.jsonl`` (every kept item with ``"accept": true``) instead of the
training sets; flip ``accept`` or edit a question/answer, then run again with ``apply_review=True``.
Teacher answers are journaled (:mod:`ragtune.synth.journal`): a killed run continues where it
stopped, and a re-run with the same settings asks the teacher nothing new.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..core.errors import BackendError, ConfigError, DataError
from ..core.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from ..core.log import get_logger
from ..data.embed_pairs import DEFAULT_INSTRUCTION, one_line
from ..data.squad import TEMPLATES, fill_template
from ..data.summary import Summary
from . import filters as F
from .filters import QA
from .journal import Journal
from .teacher import Teacher, TeacherOptions, read_prompt_file

log = get_logger(__name__)
PROMPTS_DIR = Path(__file__).parent / "prompts"


class SynthConfig(TeacherOptions):
    """``ragtune data synth``: one config for Python, CLI flags and YAML (``data:`` of a docs run)."""
    docs: str = Field(description="Folder (or file) of documents: .txt, .md, .json, .jsonl, .pdf.")
    output: str = Field(description="Output directory.")
    questions_per_chunk: int = Field(3, ge=1, le=20, description="Questions the teacher writes per chunk.")
    lang: Literal["auto", "en", "zh"] = Field("auto", description="Prompt and template language (auto: per chunk, zh when CJK).")
    prompt_file: str | None = Field(None, description="Own prompt template with {n} and {chunk} (default: the built-in zh/en file).")
    splitter: Literal["sentence", "token", "line", "none"] = Field("sentence", description="How documents become chunks.")
    chunk_chars: int = Field(800, ge=50, description="sentence splitter: pack sentences up to this many characters.")
    chunk_tokens: int = Field(256, ge=16, description="token splitter: tokens per chunk.")
    chunk_overlap: int = Field(32, ge=0, description="token splitter: overlapping tokens.")
    min_chunk_chars: int = Field(40, ge=0, description="Shorter chunks get no questions (counted).")
    max_chunks: int | None = Field(None, ge=1, description="Ask about a seeded sample of at most this many chunks (logged).")
    parse_retries: int = Field(2, ge=0, description="Re-asks (sampled, temperature >= 0.7) after unparseable output.")
    max_answer_chars: int = Field(120, ge=0, description="Longer answers are rejected (0 = no limit).")
    dup_threshold: float = Field(90.0, ge=0, le=100, description="rapidfuzz ratio at which two questions are near-duplicates.")
    roundtrip_k: int = Field(0, ge=0, description="Round-trip filter: keep a question only if its chunk is in the embedder's top-k (0 = off).")
    embed: str | None = Field("all-MiniLM-L6-v2", description="Embedder for mined negatives and the round trip (None: random negatives).")
    neg_num: int = Field(7, ge=0, description="Negatives per embedding pair.")
    neg_range: str = Field("0-30", description="Rank range START-END the negatives are mined from (own chunk excluded).")
    neg_margin: float = Field(0.05, description="Skip candidates scoring >= positive score - margin (likely positives).")
    instruction: str = Field(DEFAULT_INSTRUCTION, description="Query instruction stored as the pairs' 'prompt'.")
    eval_fraction: float = Field(0.2, ge=0, lt=1, description="Share of documents held out for eval (0 = no eval set).")
    seed: int = Field(0, description="Seed of the chunk sample, the document split and the negatives.")
    review: bool = Field(False, description="Write review.jsonl (accept/reject per item) instead of the training sets.")
    apply_review: bool = Field(False, description="Apply the decisions in review.jsonl, then write the sets.")
    restart: bool = Field(False, description="Forget the journal of an earlier run and ask the teacher again.")

    def execute(self) -> Summary:
        return synthesize(self)


@dataclass
class Chunk:
    id: str
    doc: str
    text: str
    lang: str


# -- documents -> chunks ----------------------------------------------------------------------------------
def _splitter(cfg: SynthConfig):
    from ..rag.splitters import LineSplitter, SentenceSplitter, TokenSplitter

    if cfg.splitter == "sentence":
        return SentenceSplitter(max_chars=cfg.chunk_chars)
    if cfg.splitter == "token":
        return TokenSplitter(cfg.chunk_tokens, cfg.chunk_overlap)
    if cfg.splitter == "line":
        return LineSplitter()
    return None


def load_chunks(cfg: SynthConfig, summary: Summary) -> list[Chunk]:
    """Chunks of every document, in document order, through ``rt.Document`` (one loader)."""
    from ..rag.document import ROOT, Document

    doc = Document(cfg.docs)
    split = _splitter(cfg)
    group = ROOT
    if split is not None:
        doc.create_node_group("synth_chunks", transform=split)
        group = "synth_chunks"
    chunks, seen = [], set()
    for node in doc.nodes(group):
        text = one_line(node.text)
        if len(text) < cfg.min_chunk_chars:
            summary.reject("chunk shorter than min_chunk_chars", node.metadata.get("source", "?"))
            continue
        if text in seen:
            summary.reject("duplicate chunk text", node.metadata.get("source", "?"))
            continue
        seen.add(text)
        lang = cfg.lang if cfg.lang != "auto" else ("zh" if F.is_cjk_text(text) else "en")
        chunks.append(Chunk(node.id, str(node.metadata.get("source", doc.path.name)), text, lang))
    summary.notes["documents"] = len({c.doc for c in chunks})
    summary.notes["chunks"] = len(chunks)
    if cfg.max_chunks and cfg.max_chunks < len(chunks):
        keep = set(random.Random(cfg.seed).sample(range(len(chunks)), cfg.max_chunks))
        log.info("asking about %d of %d chunks (max_chunks, seed %d)", cfg.max_chunks, len(chunks), cfg.seed)
        summary.notes["chunks asked (max_chunks sample)"] = cfg.max_chunks
        chunks = [c for i, c in enumerate(chunks) if i in keep]
    if not chunks:
        raise DataError("no chunk long enough to ask about", file=cfg.docs,
                        hint=f"lower min_chunk_chars ({cfg.min_chunk_chars}) or add documents")
    return chunks


def prompt_templates(cfg: SynthConfig) -> dict[str, str]:
    if cfg.prompt_file:
        text = read_prompt_file(cfg.prompt_file, ("n", "chunk"))
        return {"en": text, "zh": text}
    return {lang: read_prompt_file(str(PROMPTS_DIR / f"{lang}.txt"), ("n", "chunk")) for lang in ("en", "zh")}


# -- asking the teacher -------------------------------------------------------------------------------------------
def ask_teacher(cfg: SynthConfig, teacher: Teacher, chunks: list[Chunk], journal: Journal,
                templates: dict[str, str]) -> None:
    """Every chunk not yet journaled as answered: ask, parse, re-ask the unparseable, journal."""
    from tqdm.auto import tqdm

    todo = [c for c in chunks if not journal.done(c.id)]
    if len(todo) < len(chunks):
        log.info("resuming: %d of %d chunks already answered in %s", len(chunks) - len(todo), len(chunks), journal.path)
    block = cfg.concurrency * (2 if cfg.is_url else 1)
    with tqdm(total=len(chunks), initial=len(chunks) - len(todo), desc="synth", unit="chunk") as bar:
        for start in range(0, len(todo), block):
            part = todo[start:start + block]
            pending = {c.id: c for c in part}
            raws: dict[str, list[str]] = {c.id: [] for c in part}
            for attempt in range(cfg.parse_retries + 1):
                batch = list(pending.values())
                if not batch:
                    break
                msgs = [[{"role": "user", "content": templates[c.lang].format(n=cfg.questions_per_chunk, chunk=c.text)}]
                        for c in batch]
                retry = attempt > 0
                replies = teacher.chat_many(msgs, temperature=max(cfg.temperature, 0.7) if retry else None,
                                            seed=cfg.seed + attempt if retry else None)
                for chunk, reply in zip(batch, replies):
                    if isinstance(reply, BackendError):   # after the HTTP client's own retries
                        journal.add(chunk.id, status="teacher_error", error=str(reply), raw=raws[chunk.id])
                        del pending[chunk.id]
                        continue
                    raws[chunk.id].append(reply.text)
                    try:
                        qa = F.parse_qa(reply.content)
                    except ValueError as exc:
                        if attempt == cfg.parse_retries:
                            journal.add(chunk.id, status="unparseable", error=str(exc), raw=raws[chunk.id])
                        continue
                    journal.add(chunk.id, status="ok", qa=qa, attempts=attempt + 1, raw=raws[chunk.id][-1:])
                    del pending[chunk.id]
                if attempt == cfg.parse_retries:
                    pending.clear()
            bar.update(len(part))


# -- filters ---------------------------------------------------------------------------------------------------
def collect(cfg: SynthConfig, chunks: list[Chunk], journal: Journal, summary: Summary) -> list[QA]:
    items: list[QA] = []
    errors = []
    for chunk in chunks:
        entry = journal.entries.get(chunk.id)
        if entry is None or entry["status"] == "teacher_error":
            errors.append(chunk.id)
            summary.note_example("chunks without an answer (teacher errors; re-run to ask again)",
                                 f"{chunk.doc}: {(entry or {}).get('error', 'not asked')[:120]}")
            continue
        if entry["status"] == "unparseable":
            summary.reject(F.UNPARSEABLE, f"chunk {chunk.id[:8]} ({chunk.doc})")
            continue
        if entry.get("attempts", 1) > 1:
            summary.notes["chunks parsed after a re-ask"] = summary.notes.get("chunks parsed after a re-ask", 0) + 1
        for k, pair in enumerate(entry["qa"]):
            items.append(QA(f"{chunk.id[:16]}-{k}", chunk.id, chunk.doc, pair["question"].strip(),
                            F.clean_answer(pair["answer"]), chunk.lang))
    summary.notes["chunks without an answer (teacher errors; re-run to ask again)"] = len(errors)
    summary.notes["questions from the teacher"] = len(items)
    return filter_items(cfg, items, {c.id: c for c in chunks}, summary)


def filter_items(cfg: SynthConfig, items: list[QA], chunks: dict[str, Chunk], summary: Summary) -> list[QA]:
    ok = []
    for item in items:
        reason = F.check_item(item.question, item.answer, chunks[item.chunk_id].text, cfg.max_answer_chars)
        if reason:
            summary.reject(reason, item.id)
        else:
            ok.append(item)
    kept, dups = F.dedupe(ok, cfg.dup_threshold)
    for d in dups:
        summary.reject(F.DUPLICATE, f"{d.id} ~ {d.meta['duplicate_of']}")
    return kept


def review_path(cfg: SynthConfig) -> Path:
    return Path(cfg.output) / "review.jsonl"


def write_review(cfg: SynthConfig, items: list[QA], chunks: dict[str, Chunk]) -> Path:
    rows = [{"id": it.id, "accept": True, "question": it.question, "answer": it.answer, "doc": it.doc,
             "chunk": chunks[it.chunk_id].text} for it in items]
    return atomic_write_jsonl(review_path(cfg), rows)


def apply_review(cfg: SynthConfig, items: list[QA], chunks: dict[str, Chunk], summary: Summary) -> list[QA]:
    """Decisions of review.jsonl: ``accept: false`` or a deleted line rejects an item; an edited
    question or answer is checked by the same filters again."""
    from ..data.readers import read_items

    path = review_path(cfg)
    if not path.is_file():
        raise ConfigError(f"apply_review: {path} does not exist", hint="run with review=True (--review) first")
    by_id = {it.id: it for it in items}
    decided: dict[str, dict] = {}
    for i, row in enumerate(read_items(path, what="review file")):
        if row.get("id") not in by_id:
            raise DataError(f"unknown item id {row.get('id')!r} (not an item of this synth run)",
                            file=str(path), record=i, field="id")
        if not isinstance(row.get("accept"), bool):
            raise DataError(f"must be true or false, got {row.get('accept')!r}", file=str(path), record=i, field="accept")
        for key in ("question", "answer"):
            if not isinstance(row.get(key), str):
                raise DataError("must be a string", file=str(path), record=i, field=key)
        decided[row["id"]] = row
    kept = []
    for item in items:
        row = decided.get(item.id)
        if row is None or not row["accept"]:
            summary.reject(F.REVIEW, item.id)
            continue
        item.question, item.answer = row["question"].strip(), F.clean_answer(row["answer"])
        reason = F.check_item(item.question, item.answer, chunks[item.chunk_id].text, cfg.max_answer_chars)
        if reason:
            summary.reject(f"{reason} (after review edit)", item.id)
            continue
        kept.append(item)
    return kept


def round_trip(cfg: SynthConfig, items: list[QA], chunks: list[Chunk], model: Any, summary: Summary) -> list[QA]:
    import numpy as np

    from ..data.mining import encode, top_k

    index = {c.id: i for i, c in enumerate(chunks)}
    doc_vecs = encode(model, [c.text for c in chunks], 64)
    q_vecs = encode(model, [(cfg.instruction or "") + it.question for it in items], 64)
    _, ranked = top_k(q_vecs, doc_vecs, cfg.roundtrip_k)
    kept = []
    for it, row in zip(items, np.asarray(ranked)):
        if index[it.chunk_id] in row.tolist():
            kept.append(it)
        else:
            summary.reject(F.ROUND_TRIP, it.id)
    return kept


# -- split and write ------------------------------------------------------------------------------------------------
def split_documents(docs: list[str], fraction: float, seed: int) -> set[str]:
    """The held-out documents (no document is on both sides)."""
    if fraction == 0:
        return set()
    if len(docs) < 2:
        raise DataError(f"only {len(docs)} document; a document-disjoint eval split needs at least 2",
                        hint="add documents, or eval_fraction=0 for training sets only")
    order = sorted(docs)
    random.Random(seed).shuffle(order)
    n_eval = min(len(order) - 1, max(1, math.ceil(len(order) * fraction)))
    return set(order[:n_eval])


def write_outputs(cfg: SynthConfig, items: list[QA], chunks: list[Chunk], model: Any, summary: Summary) -> dict[str, Path]:
    from ..data.mining import MineNegativesConfig, mine_negatives

    out = Path(cfg.output)
    by_id = {c.id: c for c in chunks}
    held = split_documents(sorted({c.doc for c in chunks}), cfg.eval_fraction, cfg.seed)
    train = [it for it in items if it.doc not in held]
    test = [it for it in items if it.doc in held]
    paths: dict[str, Path] = {}
    sft = [{"instruction": fill_template(TEMPLATES[it.lang], by_id[it.chunk_id].text, it.question), "input": "",
            "output": it.answer, "id": it.id, "doc": it.doc} for it in train]
    paths["sft"] = atomic_write_json(out / "sft.json", sft, indent=1)
    pairs = [{"query": it.question, "pos": [by_id[it.chunk_id].text], "neg": [], "prompt": cfg.instruction}
             for it in train]
    train_chunks = [c.text for c in chunks if c.doc not in held]
    paths["embed_train"] = out / "embed_train.jsonl"
    if pairs and cfg.neg_num and model is not None:
        tmp = atomic_write_jsonl(out / ".synth" / "pairs.jsonl", pairs)
        corpus = atomic_write_text(out / ".synth" / "train_chunks.txt", "\n".join(train_chunks) + "\n")
        mined = mine_negatives(tmp, paths["embed_train"], MineNegativesConfig(
            model=cfg.embed, range=cfg.neg_range, margin=cfg.neg_margin, neg_num=cfg.neg_num, seed=cfg.seed,
            corpus=str(corpus), use_prompt=True), embedder=model)
        summary.notes["embedding negatives"] = f"mined by {cfg.embed} (ranks {cfg.neg_range}, margin {cfg.neg_margin})"
        short = mined.notes.get("rows with fewer negatives than neg_num", 0)
        if short:
            summary.notes["pairs with fewer negatives than neg_num (too few train chunks)"] = short
    else:
        rng = random.Random(cfg.seed)
        for p in pairs:
            others = [t for t in train_chunks if t != p["pos"][0]]
            p["neg"] = rng.sample(others, min(cfg.neg_num, len(others)))
        atomic_write_jsonl(paths["embed_train"], pairs)
        summary.notes["embedding negatives"] = "random chunks of other train documents" if cfg.neg_num else "none"
    evalset = [{"id": it.id, "question": it.question, "answers": it.answer, "all_answers": [it.answer],
                "context": by_id[it.chunk_id].text, "doc": it.doc, "lang": it.lang} for it in test]
    paths["eval"] = atomic_write_json(out / "eval.json", evalset, indent=1)
    paths["eval_retrieval"] = atomic_write_jsonl(out / "eval_retrieval.jsonl",
                                                 [{"query": e["question"], "corpus": [e["context"]]} for e in evalset])
    paths["kb"] = atomic_write_text(out / "kb" / "chunks.txt", "\n".join(c.text for c in chunks) + "\n")
    summary.records_out = len(items)
    summary.notes.update({"train items (sft rows = embedding pairs)": len(train), "eval items": len(test),
                          "train documents": len({c.doc for c in chunks} - held), "eval documents": len(held),
                          "kb chunks": len(chunks)})
    if held and not test:
        summary.notes["warning"] = "the held-out documents produced no item: the eval set is empty"
    return paths


def _meta(cfg: SynthConfig, teacher_name: str, templates: dict[str, str]) -> dict[str, Any]:
    """What the teacher's answers depend on: a resumed run must match it."""
    prompt_sha = hashlib.sha256(json.dumps(templates, sort_keys=True).encode()).hexdigest()[:16]
    keys = ("docs", "questions_per_chunk", "lang", "splitter", "chunk_chars", "chunk_tokens", "chunk_overlap",
            "min_chunk_chars", "max_chunks", "parse_retries", "max_tokens", "temperature", "seed")
    return {"teacher": teacher_name, "prompt_sha256": prompt_sha, **{k: getattr(cfg, k) for k in keys}}


def _load_embedder(cfg: SynthConfig):
    if not cfg.embed:
        return None
    from ..data.mining import load_embedder
    from ..models import resolve_model

    return load_embedder(str(resolve_model(cfg.embed, kind="embedding").path))


def synthesize(cfg: SynthConfig | None = None, **kwargs: Any) -> Summary:
    """Run the whole pass (see the module docs); returns the summary (also ``OUTPUT/summary.json``)."""
    cfg = cfg or SynthConfig.build(**kwargs)
    if cfg.review and cfg.apply_review:
        raise ConfigError("review and apply_review exclude each other: review writes the file, apply_review reads it")
    if cfg.roundtrip_k and not cfg.embed:
        raise ConfigError("roundtrip_k needs an embedder (embed)")
    out = Path(cfg.output)
    summary = Summary("synth", cfg.docs, str(out))
    chunks = load_chunks(cfg, summary)
    split_documents(sorted({c.doc for c in chunks}), cfg.eval_fraction, cfg.seed)   # feasible? before any teacher call
    templates = prompt_templates(cfg)
    model = _load_embedder(cfg) if (cfg.roundtrip_k or (cfg.neg_num and not cfg.review)) else None
    teacher = Teacher(cfg)
    name = teacher.check()
    log.info("teacher: %s; %d chunks of %d documents", name, len(chunks), summary.notes["documents"])
    summary.notes["teacher"] = name
    try:
        with Journal(out / ".synth" / "journal.jsonl", _meta(cfg, teacher.identity, templates), cfg.restart) as journal:
            ask_teacher(cfg, teacher, chunks, journal, templates)
            summary.records_in = len(chunks)
            items = collect(cfg, chunks, journal, summary)
    finally:
        teacher.close()
    by_id = {c.id: c for c in chunks}
    if cfg.review:
        path = write_review(cfg, items, by_id)
        summary.records_out = len(items)
        summary.notes["review file (set accept=false to reject; then apply_review)"] = str(path)
        atomic_write_json(out / "summary.json", summary.to_dict())
        return summary
    if cfg.apply_review:
        items = apply_review(cfg, items, by_id, summary)
    if cfg.roundtrip_k:
        items = round_trip(cfg, items, chunks, model, summary)
    if not items:
        atomic_write_json(out / "summary.json", summary.to_dict())
        errors = summary.notes.get("chunks without an answer (teacher errors; re-run to ask again)", 0)
        if errors == len(chunks):
            first = summary.examples.get("chunks without an answer (teacher errors; re-run to ask again)", ["?"])[0]
            raise BackendError(f"the teacher answered none of the {len(chunks)} chunks; e.g. {first}",
                               hint="fix the teacher and re-run: answered chunks are kept, the others asked again")
        raise DataError("no synthetic item survived the filters", file=cfg.docs,
                        hint=f"see {out / 'summary.json'} for the rejections by reason")
    write_outputs(cfg, items, chunks, model, summary)
    atomic_write_json(out / "summary.json", summary.to_dict())
    return summary
