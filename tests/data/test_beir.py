"""BEIR export/import: round trip, the errors on bad inputs, `ragtune data to-beir`, and the layout
the BEIR / MTEB loaders read."""
import csv
import json
import logging

import pytest

from ragtune.cli import main
from ragtune.core.errors import DataError, OutputError
from ragtune.data.beir import read_beir, write_beir
from ragtune.data.embed_sets import RetrievalItem, eval_corpus, load_eval, load_eval_with_corpus

from .helpers import read_jsonl, write_jsonl

ITEMS = [
    RetrievalItem("What does pump 1 do?", ["Pump 1 moves water.", "Pumps need priming."]),
    RetrievalItem("How are filters cleaned?", ["Filters are back-flushed weekly."]),
    RetrievalItem("Why prime a pump?", ["Pumps need priming.", "Air stops a pump from lifting water."]),
]
DISTRACTORS = ["Valves close under pressure.", "Pump 1 moves water.", "Gauges read in bar."]
CORPUS = ["Pump 1 moves water.", "Pumps need priming.", "Filters are back-flushed weekly.",
          "Air stops a pump from lifting water.", "Valves close under pressure.", "Gauges read in bar."]


@pytest.fixture
def beir_dir(tmp_path):
    out = tmp_path / "beir"
    write_beir(ITEMS, out, DISTRACTORS)
    return out


def test_round_trip_keeps_items_and_corpus(beir_dir):
    items, corpus = read_beir(beir_dir)
    assert items == ITEMS
    assert corpus == CORPUS                 # relevant passages first-seen, then new distractors
    assert load_eval(beir_dir) == ITEMS     # load_eval detects a BEIR directory
    assert load_eval_with_corpus(beir_dir) == (ITEMS, CORPUS)


def test_ids_counts_and_layout(tmp_path):
    counts = write_beir(ITEMS, tmp_path / "b", DISTRACTORS, split="dev")
    assert (counts.queries, counts.corpus, counts.relevant, counts.distractors, counts.duplicate_distractors,
            counts.qrels) == (3, 6, 4, 2, 1, 5)
    docs = read_jsonl(tmp_path / "b" / "corpus.jsonl")
    assert docs[0] == {"_id": "d0", "title": "", "text": "Pump 1 moves water."}
    assert [d["_id"] for d in docs] == [f"d{i}" for i in range(6)]
    assert read_jsonl(tmp_path / "b" / "queries.jsonl")[2] == {"_id": "q2", "text": "Why prime a pump?"}
    lines = (tmp_path / "b" / "qrels" / "dev.tsv").read_text().splitlines()
    assert lines == ["query-id\tcorpus-id\tscore", "q0\td0\t1", "q0\td1\t1", "q1\td2\t1", "q2\td1\t1", "q2\td3\t1"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["corpus.jsonl", "qrels", "queries.jsonl"]


def beir_generic_data_loader(folder, split="test"):
    """What beir.datasets.data_loader.GenericDataLoader.load does (BEIR 2.x), without the package."""
    corpus, queries, qrels = {}, {}, {}
    with open(folder / "corpus.jsonl", encoding="utf8") as fh:
        for line in fh:
            line = json.loads(line)
            corpus[line.get("_id")] = {"text": line.get("text"), "title": line.get("title")}
    with open(folder / "queries.jsonl", encoding="utf8") as fh:
        for line in fh:
            line = json.loads(line)
            queries[line.get("_id")] = line.get("text")
    reader = csv.reader(open(folder / "qrels" / f"{split}.tsv", encoding="utf-8"), delimiter="\t",
                        quoting=csv.QUOTE_MINIMAL)
    next(reader)   # BEIR skips the first line unconditionally: it must be the header
    for row in reader:
        qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return corpus, {qid: queries[qid] for qid in qrels}, qrels


def test_written_files_load_as_beir_and_mteb_read_them(beir_dir, tmp_path):
    corpus, queries, qrels = beir_generic_data_loader(beir_dir)
    assert len(corpus) == 6 and len(queries) == 3 and sum(len(v) for v in qrels.values()) == 5
    for qid, judged in qrels.items():
        item = ITEMS[int(qid[1:])]
        assert queries[qid] == item.query
        assert [corpus[did]["text"] for did in judged] == item.corpus and set(judged.values()) == {1}
    # MTEB's and FlagEmbedding's BEIR loaders go through HF datasets: json for the .jsonl, tab-CSV for qrels
    datasets = pytest.importorskip("datasets")
    cache = str(tmp_path / "hf-cache")
    c = datasets.load_dataset("json", data_files=str(beir_dir / "corpus.jsonl"), split="train", cache_dir=cache)
    q = datasets.load_dataset("json", data_files=str(beir_dir / "queries.jsonl"), split="train", cache_dir=cache)
    r = datasets.load_dataset("csv", data_files=str(beir_dir / "qrels" / "test.tsv"), delimiter="\t",
                              split="train", cache_dir=cache)
    assert set(c.column_names) == {"_id", "title", "text"} and c.num_rows == 6
    assert set(q.column_names) == {"_id", "text"} and q.num_rows == 3
    assert r.column_names == ["query-id", "corpus-id", "score"] and r.num_rows == 5
    assert r.features["score"].dtype == "int64"


def test_titles_and_score_zero_and_duplicate_texts(tmp_path):
    d = tmp_path / "b"
    (d / "qrels").mkdir(parents=True)
    write_jsonl(d / "corpus.jsonl", [{"_id": "a", "title": "Pumps", "text": "Prime before start."},
                                     {"_id": "b", "text": "No title here."},
                                     {"_id": 7, "title": "", "text": "No title here."}])
    write_jsonl(d / "queries.jsonl", [{"_id": "1", "text": "priming?"}, {"_id": "2", "text": "titles?"}])
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\ta\t2\n1\tb\t0\n2\t7\t1\n")
    items, corpus = read_beir(d)
    assert items == [RetrievalItem("priming?", ["Pumps\nPrime before start."]),   # score 0 is not a positive
                     RetrievalItem("titles?", ["No title here."])]                 # an integer _id reads as "7"
    assert corpus == ["Pumps\nPrime before start.", "No title here."]             # duplicate text merged


def test_plain_eval_file_pool_is_its_passages(tmp_path):
    path = write_jsonl(tmp_path / "eval.jsonl", [{"query": it.query, "corpus": it.corpus} for it in ITEMS])
    items, pool = load_eval_with_corpus(path)
    assert items == ITEMS and pool == eval_corpus(ITEMS)[0]
    passages, relevant = eval_corpus(ITEMS, ["Extra one.", "Pumps need priming."])
    assert passages[:2] == ["Extra one.", "Pumps need priming."] and relevant[0] == {2, 1}
    with pytest.raises(DataError, match="not an eval file nor a BEIR directory"):
        load_eval(tmp_path)


def _edit(path, old, new):
    text = path.read_text(encoding="utf-8")
    assert old in text, (old, text)
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _remove(path):
    path.unlink()


# (case, edit of the written BEIR dir, file named, line named, field named)
BAD = [
    ("corpus bad JSON", lambda d: _edit(d / "corpus.jsonl", '{"_id": "d1"', '{"_id": "d1'), "corpus.jsonl", "line 2", None),
    ("corpus no _id", lambda d: _edit(d / "corpus.jsonl", '"_id": "d2", ', ""), "corpus.jsonl", "line 3", "_id"),
    ("corpus dup _id", lambda d: _edit(d / "corpus.jsonl", '"_id": "d2"', '"_id": "d0"'), "corpus.jsonl", "line 3", "_id"),
    ("corpus no text", lambda d: _edit(d / "corpus.jsonl", ', "text": "Pumps need priming."', ""),
     "corpus.jsonl", "line 2", "text"),
    ("corpus text not str", lambda d: _edit(d / "corpus.jsonl", '"text": "Pumps need priming."', '"text": 5'),
     "corpus.jsonl", "line 2", "text"),
    ("corpus empty doc", lambda d: _edit(d / "corpus.jsonl", '"text": "Pumps need priming."', '"text": ""'),
     "corpus.jsonl", "line 2", "text"),
    ("corpus not object", lambda d: _edit(d / "corpus.jsonl", '{"_id": "d1", "title": "", "text": "Pumps need priming."}',
                                          '["d1"]'), "corpus.jsonl", "line 2", None),
    ("queries no text", lambda d: _edit(d / "queries.jsonl", ', "text": "How are filters cleaned?"', ""),
     "queries.jsonl", "line 2", "text"),
    ("queries empty text", lambda d: _edit(d / "queries.jsonl", '"How are filters cleaned?"', '" "'),
     "queries.jsonl", "line 2", "text"),
    ("queries _id list", lambda d: _edit(d / "queries.jsonl", '"_id": "q1"', '"_id": ["q1"]'),
     "queries.jsonl", "line 2", "_id"),
    ("qrels unknown query", lambda d: _edit(d / "qrels" / "test.tsv", "q1\td2", "q9\td2"), "test.tsv", "line 4", "query-id"),
    ("qrels unknown doc", lambda d: _edit(d / "qrels" / "test.tsv", "q1\td2", "q1\td99"), "test.tsv", "line 4", "corpus-id"),
    ("qrels bad score", lambda d: _edit(d / "qrels" / "test.tsv", "q1\td2\t1", "q1\td2\t1.5"), "test.tsv", "line 4", "score"),
    ("qrels dup pair", lambda d: _edit(d / "qrels" / "test.tsv", "q1\td2\t1\n", "q1\td2\t1\nq1\td2\t1\n"),
     "test.tsv", "line 5", "corpus-id"),
    ("qrels columns", lambda d: _edit(d / "qrels" / "test.tsv", "q1\td2\t1", "q1 d2 1"), "test.tsv", "line 4", None),
    ("qrels no header", lambda d: _edit(d / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\n", ""),
     "test.tsv", "line 1", None),
    ("missing corpus", lambda d: _remove(d / "corpus.jsonl"), "corpus.jsonl", "does not exist", None),
    ("missing queries", lambda d: _remove(d / "queries.jsonl"), "queries.jsonl", "does not exist", None),
    ("missing qrels", lambda d: _remove(d / "qrels" / "test.tsv"), "test.tsv", "do not exist", None),
    ("unjudged query", lambda d: _edit(d / "qrels" / "test.tsv", "q1\td2\t1\n", ""), "queries.jsonl",
     "1 of 3 queries have no positive judgment", "_id"),
    ("score 0 only", lambda d: _edit(d / "qrels" / "test.tsv", "q1\td2\t1", "q1\td2\t0"), "queries.jsonl",
     ": q1", "_id"),
]


@pytest.mark.parametrize("case,edit,file,line,field", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_name_file_line_and_field(beir_dir, case, edit, file, line, field):
    edit(beir_dir)
    with pytest.raises(DataError) as info:
        read_beir(beir_dir)
    message = str(info.value)
    assert file in message and line in message, message
    assert info.value.field == field, message
    if field:
        assert f"field '{field}'" in message
    if "no positive judgment" in message:   # the same error through load_eval (the eval commands' reader)
        with pytest.raises(DataError, match="allow_unjudged"):
            load_eval(beir_dir)


def test_unjudged_queries_listed_or_skipped_with_a_log(beir_dir):
    _edit(beir_dir / "qrels" / "test.tsv", "q1\td2\t1\n", "")
    with pytest.raises(DataError) as info:
        read_beir(beir_dir)
    assert info.value.message.endswith("1 of 3 queries have no positive judgment (score > 0) in "
                                       f"{beir_dir / 'qrels' / 'test.tsv'}: q1")
    assert "allow_unjudged" in str(info.value.hint) and "--allow-unjudged" in str(info.value.hint)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append   # type: ignore[method-assign]
    logger = logging.getLogger("ragtune.data.beir")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        items, corpus = read_beir(beir_dir, allow_unjudged=True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert items == [ITEMS[0], ITEMS[2]] and corpus == CORPUS
    assert any("skipping 1 of 3 queries" in r.getMessage() for r in records)
    assert load_eval(beir_dir, allow_unjudged=True) == [ITEMS[0], ITEMS[2]]


def test_missing_split_lists_the_splits_found(beir_dir):
    with pytest.raises(DataError, match="split 'dev'") as info:
        read_beir(beir_dir, split="dev")
    assert "splits found: test" in str(info.value.hint)


def test_write_refuses_a_directory_with_other_files_and_empty_items(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="notes.txt"):
        write_beir(ITEMS, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(DataError, match="no eval items"):
        write_beir([], tmp_path / "empty")
    write_beir(ITEMS, tmp_path / "again")
    write_beir(ITEMS[:1], tmp_path / "again")            # an earlier export is replaced whole
    assert len(read_beir(tmp_path / "again")[0]) == 1


def test_cli_to_beir(tmp_path, capsys):
    evalset = write_jsonl(tmp_path / "eval.jsonl", [{"query": it.query, "corpus": it.corpus} for it in ITEMS])
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "knowledge_base.txt").write_text("\n".join(DISTRACTORS[:2]) + "\n\n", encoding="utf-8")
    train = write_jsonl(tmp_path / "train.jsonl", [{"query": "q", "pos": ["Gauges read in bar."],
                                                   "neg": ["Valves close under pressure.", "Seals wear out."]}])
    assert main(["data", "to-beir", str(evalset), str(tmp_path / "out"), "--kb", str(kb), "--kb", str(train)]) == 0
    out = capsys.readouterr().out
    for expected in ("queries: 3", "corpus passages: 7", "distractor passages: 3",
                     "kb passages already in the corpus: 2", "qrels rows (qrels/test.tsv): 5"):
        assert expected in out, out
    items, corpus = read_beir(tmp_path / "out")
    assert items == ITEMS
    assert corpus == [*CORPUS[:5], "Gauges read in bar.", "Seals wear out."]
    # a BEIR directory as EVAL: re-exported with its distractors, under another split name
    assert main(["data", "to-beir", str(tmp_path / "out"), str(tmp_path / "again"), "--split", "dev", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["notes"]["corpus passages"] == 7
    assert read_beir(tmp_path / "again", split="dev") == (items, corpus)
    # errors: a missing --kb file, an unjudged BEIR input (then --allow-unjudged)
    assert main(["data", "to-beir", str(evalset), str(tmp_path / "o2"), "--kb", str(tmp_path / "nope.txt")]) == 1
    assert "nope.txt" in capsys.readouterr().err and not (tmp_path / "o2").exists()
    _edit(tmp_path / "out" / "qrels" / "test.tsv", "q1\td2\t1\n", "")
    assert main(["data", "to-beir", str(tmp_path / "out"), str(tmp_path / "o3")]) == 1
    assert "no positive judgment" in capsys.readouterr().err and not (tmp_path / "o3").exists()
    assert main(["data", "to-beir", str(tmp_path / "out"), str(tmp_path / "o3"), "--allow-unjudged"]) == 0
    assert "queries: 2" in capsys.readouterr().out


class _TableEmbedder:
    """Fixed vectors per text: enough to see which pool the evaluation ranks."""
    VECS = {"qa": [1.0, 0.0], "pa": [0.8, 0.6], "qb": [0.0, 1.0], "pb": [0.0, 1.0], "near miss": [1.0, 0.0]}

    def embed_queries(self, texts):
        return [self.VECS[t] for t in texts]

    embed_documents = embed_queries


def test_embedder_evaluation_ranks_against_the_beir_corpus(tmp_path):
    from ragtune.finetune.embed.evaluate import evaluate_embedder

    items = [RetrievalItem("qa", ["pa"]), RetrievalItem("qb", ["pb"])]
    write_beir(items, tmp_path / "b", ["near miss"])
    evals, pool = load_eval_with_corpus(tmp_path / "b")
    alone = evaluate_embedder(_TableEmbedder(), evals, [1])
    pooled = evaluate_embedder(_TableEmbedder(), evals, [1], pool)
    assert (alone["n_corpus"], alone["recall@1"]) == (2, 1.0)
    assert (pooled["n_corpus"], pooled["recall@1"]) == (3, 0.5)   # the distractor outranks pa for qa
