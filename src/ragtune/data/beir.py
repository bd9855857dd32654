"""BEIR-style retrieval sets: read and write the (corpus, queries, qrels) triple.

The layout BEIR, MTEB and FlagEmbedding's evaluation read, so ragtune's retrieval numbers can be
compared with theirs on the same files::

    DIR/corpus.jsonl       {"_id": str, "title": str, "text": str}   one document per line
    DIR/queries.jsonl      {"_id": str, "text": str}                 one query per line
    DIR/qrels/SPLIT.tsv    query-id<TAB>corpus-id<TAB>score          a header line, then int scores

Writing (:func:`write_beir`): query ``i`` of the eval set gets id ``q{i}``; documents get ``d0``,
``d1``, ... in first-seen order over the items' relevant passages, then the distractor passages
(``extra_corpus``), deduplicated by exact text; ``title`` is ``""``; every (query, relevant
passage) pair is a qrels row with score 1. The whole directory is written atomically and replaces
an earlier export (its ids would no longer match), never a directory holding other files.

Reading (:func:`read_beir`): a document's passage text is its ``text`` when ``title`` is empty,
else ``f"{title}\\n{text}"`` (ragtune judges relevance by passage text, so title and text travel
together). A qrels row is a positive when its score is > 0 (BEIR/pytrec_eval semantics); rows with
score <= 0 are judged non-relevant and counted in an INFO log. Queries are kept in ``queries.jsonl``
order. ``_id`` may be a JSON string or integer (read as its string). Errors name the file, the
record (0-based), the line and the field, and are raised before any model is loaded.

Unjudged queries: ``queries.jsonl`` of a published BEIR set often holds the queries of every split,
and BEIR's own loader keeps only the queries that ``qrels/SPLIT.tsv`` judges. ragtune does not drop
them silently: by default queries with no positive judgment are an error listing their count and
ids; ``allow_unjudged=True`` skips them (what BEIR and MTEB evaluate) with an INFO log of the count.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import DataError, OutputError
from ..core.io import atomic_dir, atomic_open, check_output
from ..core.log import get_logger
from .embed_sets import RetrievalItem
from .summary import Summary

log = get_logger(__name__)

CORPUS, QUERIES, QRELS = "corpus.jsonl", "queries.jsonl", "qrels"
QRELS_HEADER = ("query-id", "corpus-id", "score")
_SHOW_IDS = 20


def is_beir_dir(path: str | Path) -> bool:
    """``path`` is a directory with ``corpus.jsonl`` and ``queries.jsonl``."""
    p = Path(path)
    return p.is_dir() and (p / CORPUS).is_file() and (p / QUERIES).is_file()


def looks_like_beir_dir(path: str | Path) -> bool:
    """``path`` is a directory with any part of the BEIR layout (then a missing part is an error)."""
    p = Path(path)
    return p.is_dir() and any((p / name).exists() for name in (CORPUS, QUERIES, QRELS))


@dataclass
class BeirCounts:
    """What :func:`write_beir` wrote."""
    queries: int
    corpus: int
    relevant: int          # distinct relevant passages
    distractors: int       # extra passages added (not already in the corpus)
    duplicate_distractors: int   # extra passages dropped because their text was already there
    qrels: int


def _check_outdir(outdir: Path) -> None:
    check_output(outdir, directory=True, what="BEIR directory")
    if outdir.is_dir():
        other = sorted(p.name for p in outdir.iterdir() if p.name not in (CORPUS, QUERIES, QRELS))
        if other:
            shown = ", ".join(other[:5]) + (", ..." if len(other) > 5 else "")
            raise OutputError(f"BEIR directory {outdir} exists and holds other files ({shown}); the export "
                              "replaces the whole directory", hint="choose a new or empty OUTDIR")


def write_beir(items: Sequence[RetrievalItem], outdir: str | Path, extra_corpus: Iterable[str] = (),
               split: str = "test") -> BeirCounts:
    """Write ``items`` (plus distractor passages) as a BEIR directory; see the module docstring."""
    outdir = Path(outdir)
    if not items:
        raise DataError("no eval items to export")
    if not split or "/" in split or split.startswith("."):
        raise DataError(f"split must be a plain name like 'test', got {split!r}")
    _check_outdir(outdir)
    doc_ids: dict[str, str] = {}
    qrels: list[tuple[str, str]] = []
    for i, it in enumerate(items):
        seen: set[str] = set()
        for text in it.corpus:
            did = doc_ids.setdefault(text, f"d{len(doc_ids)}")
            if did not in seen:
                seen.add(did)
                qrels.append((f"q{i}", did))
    relevant = len(doc_ids)
    duplicates = 0
    for text in extra_corpus:
        if text in doc_ids:
            duplicates += 1
        else:
            doc_ids[text] = f"d{len(doc_ids)}"
    import json

    with atomic_dir(outdir) as tmp:
        with atomic_open(tmp / CORPUS) as fh:
            for text, did in doc_ids.items():
                fh.write(json.dumps({"_id": did, "title": "", "text": text}, ensure_ascii=False) + "\n")
        with atomic_open(tmp / QUERIES) as fh:
            for i, it in enumerate(items):
                fh.write(json.dumps({"_id": f"q{i}", "text": it.query}, ensure_ascii=False) + "\n")
        with atomic_open(tmp / QRELS / f"{split}.tsv") as fh:
            fh.write("\t".join(QRELS_HEADER) + "\n")
            for qid, did in qrels:
                fh.write(f"{qid}\t{did}\t1\n")
    return BeirCounts(queries=len(items), corpus=len(doc_ids), relevant=relevant,
                      distractors=len(doc_ids) - relevant, duplicate_distractors=duplicates, qrels=len(qrels))


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"the BEIR {what} file does not exist" + (" (it is a directory)" if path.is_dir() else ""),
                        file=str(path), hint="a BEIR directory holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    return path


def _doc_id(row: dict[str, Any], file: str, index: int, line: int | None) -> str:
    value = row.get("_id")
    if value is None:
        raise DataError(f"line {line}: missing", file=file, record=index, field="_id")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise DataError(f"line {line}: must be a non-empty string (or integer), got {value!r}",
                        file=file, record=index, field="_id")
    return str(value)


def _string(row: dict[str, Any], key: str, file: str, index: int, line: int | None, required: bool) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise DataError(f"line {line}: missing", file=file, record=index, field=key)
        return ""
    if not isinstance(value, str):
        raise DataError(f"line {line}: must be a string, got {type(value).__name__}",
                        file=file, record=index, field=key)
    return value


def _read_jsonl(path: Path, what: str) -> list[tuple[str, dict[str, Any], int, int | None]]:
    from .readers import read_records

    file = str(path)
    out: list[tuple[str, dict[str, Any], int, int | None]] = []
    first_line: dict[str, int | None] = {}
    for r in read_records(_require(path, what)):
        if not isinstance(r.data, dict):
            raise DataError(f"line {r.line}: must be a JSON object, got {type(r.data).__name__}",
                            file=file, record=r.index)
        rid = _doc_id(r.data, file, r.index, r.line)
        if rid in first_line:
            raise DataError(f"line {r.line}: duplicate id {rid!r} (first at line {first_line[rid]})",
                            file=file, record=r.index, field="_id")
        first_line[rid] = r.line
        out.append((rid, r.data, r.index, r.line))
    if not out:
        raise DataError(f"the BEIR {what} holds no records", file=file)
    return out


def _read_qrels(path: Path, queries: dict[str, Any], docs: dict[str, Any]) -> list[tuple[str, str, int]]:
    from .readers import read_text

    file = str(path)
    lines = read_text(path).split("\n")
    if not lines[0].strip():
        raise DataError("line 1: the header line query-id<TAB>corpus-id<TAB>score is missing", file=file)
    header = lines[0].rstrip("\r").split("\t")
    if len(header) != 3 or header[2].strip().lstrip("-").isdigit():
        raise DataError(f"line 1: must be the header query-id<TAB>corpus-id<TAB>score, got {lines[0]!r}",
                        file=file, hint="BEIR and MTEB loaders skip the first line: a data row there is lost")
    rows: list[tuple[str, str, int]] = []
    first: dict[tuple[str, str], int] = {}
    index = 0
    for lineno, raw in enumerate(lines[1:], start=2):
        text = raw.rstrip("\r")
        if not text.strip():
            continue
        cols = text.split("\t")
        if len(cols) != 3:
            raise DataError(f"line {lineno}: expected 3 tab-separated columns (query-id, corpus-id, score), "
                            f"got {len(cols)}", file=file, record=index)
        qid, did, score_text = (c.strip() for c in cols)
        if qid not in queries:
            raise DataError(f"line {lineno}: unknown query id {qid!r} (not in {QUERIES})",
                            file=file, record=index, field="query-id")
        if did not in docs:
            raise DataError(f"line {lineno}: unknown corpus id {did!r} (not in {CORPUS})",
                            file=file, record=index, field="corpus-id")
        try:
            score = int(score_text)
        except ValueError:
            raise DataError(f"line {lineno}: must be an integer, got {score_text!r}",
                            file=file, record=index, field="score") from None
        if (qid, did) in first:
            raise DataError(f"line {lineno}: the pair ({qid}, {did}) is judged twice (first at line "
                            f"{first[(qid, did)]})", file=file, record=index, field="corpus-id")
        first[(qid, did)] = lineno
        rows.append((qid, did, score))
        index += 1
    return rows


def passage_text(title: str, text: str) -> str:
    """A BEIR document as one passage: ``text``, or ``title\\ntext`` when it has a title."""
    return f"{title}\n{text}" if title else text


def read_beir(directory: str | Path, split: str = "test", *,
              allow_unjudged: bool = False) -> tuple[list[RetrievalItem], list[str]]:
    """The judged queries of ``directory`` (their relevant passage texts as ``corpus``) and the
    full corpus (every document's passage text, deduplicated, in ``corpus.jsonl`` order)."""
    d = Path(directory)
    if not d.is_dir():
        raise DataError("the BEIR directory does not exist" if not d.exists() else "is a file, not a BEIR directory",
                        file=str(d))
    qrels_path = d / QRELS / f"{split}.tsv"
    if not qrels_path.is_file():
        found = sorted(p.stem for p in (d / QRELS).glob("*.tsv")) if (d / QRELS).is_dir() else []
        raise DataError(f"the BEIR qrels of split '{split}' do not exist", file=str(qrels_path),
                        hint=f"splits found: {', '.join(found)}" if found else
                        "a BEIR directory holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    corpus_file, queries_file = d / CORPUS, d / QUERIES
    docs: dict[str, str] = {}
    for did, row, index, line in _read_jsonl(corpus_file, "corpus"):
        title = _string(row, "title", str(corpus_file), index, line, False)
        text = _string(row, "text", str(corpus_file), index, line, True)
        passage = passage_text(title.strip(), text)
        if not passage.strip():
            raise DataError(f"line {line}: document {did!r} is empty (no title, no text)",
                            file=str(corpus_file), record=index, field="text")
        docs[did] = passage
    queries: dict[str, str] = {}
    for qid, row, index, line in _read_jsonl(queries_file, "queries"):
        text = _string(row, "text", str(queries_file), index, line, True)
        if not text.strip():
            raise DataError(f"line {line}: query {qid!r} is empty", file=str(queries_file), record=index, field="text")
        queries[qid] = text
    positives: dict[str, list[str]] = {}
    not_relevant = 0
    for qid, did, score in _read_qrels(qrels_path, queries, docs):
        if score > 0:
            positives.setdefault(qid, []).append(docs[did])
        else:
            not_relevant += 1
    if not_relevant:
        log.info("%s: %d rows with score <= 0 (judged not relevant) are not positives", qrels_path, not_relevant)
    unjudged = [qid for qid in queries if qid not in positives]
    if unjudged and not allow_unjudged:
        shown = ", ".join(unjudged[:_SHOW_IDS]) + (", ..." if len(unjudged) > _SHOW_IDS else "")
        raise DataError(f"{len(unjudged)} of {len(queries)} queries have no positive judgment (score > 0) in "
                        f"{qrels_path}: {shown}", file=str(queries_file), field="_id",
                        hint="published BEIR sets list every split's queries; allow_unjudged=True skips "
                             "them, as BEIR's and MTEB's loaders do (CLI: `ragtune data to-beir DIR NEWDIR "
                             "--allow-unjudged` writes a copy holding only the judged queries)")
    if unjudged:
        log.info("%s: skipping %d of %d queries with no positive judgment in %s (allow_unjudged)",
                 queries_file, len(unjudged), len(queries), qrels_path)
    if not positives:
        raise DataError(f"no query has a positive judgment (score > 0) in {qrels_path}", file=str(qrels_path))
    items = [RetrievalItem(text, positives[qid]) for qid, text in queries.items() if qid in positives]
    corpus = list(dict.fromkeys(docs.values()))
    if len(corpus) < len(docs):
        log.info("%s: %d documents repeat the text of an earlier one; the corpus holds %d distinct passages",
                 corpus_file, len(docs) - len(corpus), len(corpus))
    return items, corpus


def read_kb_passages(path: str | Path) -> list[str]:
    """Distractor passages for :func:`write_beir`: a knowledge-base ``.txt`` (one passage per line;
    blank lines are not passages), a directory of such ``.txt`` files (``embed-pairs``' ``OUT/kb``),
    or an embedding train file (``{query, pos, neg}``: its pos and neg passages)."""
    from .readers import read_text

    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.txt"))
        if not files:
            raise DataError("the knowledge-base directory holds no .txt files", file=str(p))
        return [t for f in files for t in read_kb_passages(f)]
    if not p.exists():
        raise DataError("the knowledge base does not exist", file=str(p))
    if p.suffix.lower() == ".txt":
        return [line.strip() for line in read_text(p).split("\n") if line.strip()]
    from .embed_sets import load_train

    return [t for r in load_train(p) for t in (*r.pos, *r.neg)]


def to_beir(evalset: str | Path, outdir: str | Path, kb: Sequence[str | Path] = (), split: str = "test",
            *, allow_unjudged: bool = False) -> Summary:
    """``ragtune data to-beir``: an eval set (or a BEIR directory) plus distractor passages from
    ``kb`` files -> a BEIR directory ``outdir``; returns the summary."""
    from .embed_sets import load_eval_with_corpus

    _check_outdir(Path(outdir))
    items, pool = load_eval_with_corpus(evalset, allow_unjudged=allow_unjudged)
    relevant = {p for it in items for p in it.corpus}
    kept = [p for p in pool if p not in relevant]   # a BEIR input's distractors (none for an eval file)
    extra = [p for path in kb for p in read_kb_passages(path)]
    counts = write_beir(items, outdir, [*kept, *extra], split)
    summary = Summary(command="to-beir", input=str(evalset), output=str(outdir),
                      records_in=len(items), records_out=counts.queries)
    summary.notes.update({"queries": counts.queries, "corpus passages": counts.corpus,
                          "relevant passages": counts.relevant, "distractor passages": counts.distractors,
                          "kb passages already in the corpus": counts.duplicate_distractors,
                          f"qrels rows (qrels/{split}.tsv)": counts.qrels})
    return summary
