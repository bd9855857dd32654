"""Every fenced code block of README.md and docs/*.md runs as written, or is checked as what it is
(issue 19: the docs cannot drift again).

- ``bash``: every ``ragtune ...`` command is parsed by the real click CLI (each group's and
  command's ``make_context``; nothing is run): unknown options, missing required ones, bad choices
  and numbers that are not numbers fail. A ``click.Path(exists=True)`` placeholder (``train.json``)
  is created empty in a temp dir, the only failure tolerated (tests/docs_snippets.py). Other
  commands are not run: ``make`` targets must exist in the Makefile, ``pip install -e ".[x]"``
  extras in pyproject.toml, ``pytest`` paths in the repo.
- ``python``: executed for real, the blocks of one page in order in one namespace, in a temp dir
  where ``gemma-3-270m`` and ``all-MiniLM-L6-v2`` are local folders holding the tiny test models
  (``resolve_model`` prefers an existing local path to a bundled name, so the text is unchanged),
  next to small data files with the names the page uses (PAGE_FILES). Names a page leaves to the
  reader (``eval_items``, ``llm``) are defined by PRELUDES, and outputs a page makes with a shell
  command it shows (``runs/embed``) are stood in by tiny models (STAND_INS).
- ``yaml``: run configs go through ``RunConfig.from_yaml`` and ``build_stages``.
- ``json`` / ``toml``: parsed; instruction records go through ``ragtune.data.validate``,
  ``response_format`` through the server's parser, entry-point groups must be registry groups.
- unlabelled blocks: the ones with a checkable claim are checked (the default CMRC template, the
  Ollama TEMPLATE, a console transcript); the rest are in EXEMPT with the reason.

A block that is in EXEMPT is skipped with its reason; an EXEMPT id that no longer names a block
fails, so the table cannot rot. The whole file runs in the fast suite (~2 min on 2 busy cores).
"""
from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import click
import pytest
import yaml
from docs_snippets import ROOT, Block, all_blocks, check_ragtune_argv, command_lines

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

BLOCKS = all_blocks()
BY_ID = {b.id: b for b in BLOCKS}

# block id -> why it is not run here. Prefer making a block runnable to adding a row.
EXEMPT: dict[str, str] = {
    "docs/architecture.md:cli (ragtune ...) the command line: flag":
        "a diagram of the layers (the layering itself is enforced by tests/test_architecture.py)",
    'docs/data.md:OUTDIR/corpus.jsonl {"_id": "d0", "title':
        "an annotated file layout, not a file (to-beir is tested in tests/data)",
    "docs/data.md:# BEIR (pip install beir)":
        "third-party BEIR code: beir is not a dependency of ragtune and is not installed here",
    "docs/rag.md:torchrun --nproc_per_node N -m FlagEmbed":
        "the shape of the FlagEmbedding command ragtune builds, with placeholders (N, BASE, Q, ...)",
}

# -- shell blocks ------------------------------------------------------------------------------
SHELL = {"bash", "sh", "shell", "console"}


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:", text, re.M)}


def _extras() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
               ["project"]["optional-dependencies"])


def check_other_command(argv: list[str]) -> None:
    """Commands that are not ragtune's are not run; what they name in this repo must exist."""
    prog = argv[0]
    if prog == "make":
        missing = set(argv[1:]) - _makefile_targets()
        assert not missing, f"make targets not in the Makefile: {sorted(missing)}"
    elif prog == "pip" and argv[1:3] == ["install", "-e"]:
        m = re.fullmatch(r"\.\[([\w,-]+)\]", argv[3])
        assert m, argv
        missing = set(m.group(1).split(",")) - _extras()
        assert not missing, f"extras not in pyproject.toml: {sorted(missing)}"
    elif prog == "pytest":
        for arg in argv[1:]:
            if not arg.startswith("-"):
                assert (ROOT / arg.split("::")[0]).exists(), f"{arg} does not exist"
    elif prog in ("python", "python3") and len(argv) > 1 and argv[1].endswith(".py"):
        assert (ROOT / argv[1]).exists(), f"{argv[1]} does not exist"
    elif prog in ("ollama", "curl", "torchrun", "vllm", "hf"):
        pass          # external tools, not installed here
    elif prog in ("printf", "echo"):
        pass          # shell built-ins feeding a pipe
    else:
        raise AssertionError(f"no rule for the command {shlex.join(argv)!r}: add one to check_other_command")


def run_shell_block(block: Block, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    commands = command_lines(block.text)
    assert commands, "a shell block without a command"
    for argv in commands:
        if argv[0] == "ragtune":
            try:
                check_ragtune_argv(argv[1:])
            except click.ClickException as exc:
                raise AssertionError(f"`{shlex.join(argv)}`: {exc.format_message()}") from None
        else:
            check_other_command(argv)


# -- python blocks -----------------------------------------------------------------------------
ALPACA = [{"instruction": f"Use the original text. ### Known paragraph: the pump P{i} needs service every "
                          f"{i + 2} months. ### Question: how often does pump P{i} need service?",
           "input": "", "output": f"every {i + 2} months"} for i in range(12)]
QA = [{"question": f"How often does pump P{i} need service?",
       "context": f"The pump P{i} needs service every {i + 2} months. Its valve is model V{i}."} for i in range(12)]
KB_TEXT = "\n".join(q["context"] for q in QA)


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _files_train(d: Path) -> None:
    _write_json(d / "train.json", ALPACA)


def _files_kb(d: Path) -> None:
    (d / "KB").mkdir(exist_ok=True)
    (d / "KB" / "manual.txt").write_text(KB_TEXT + "\n", encoding="utf-8")


def _files_embed_pairs(d: Path) -> None:
    from ragtune.data import embed_pairs

    _write_json(d / "qa.json", QA)
    embed_pairs(str(d / "qa.json"), str(d / "OUT"), neg_num=2, test_size=4)   # what the page's step 1 runs


# page -> the data files its python blocks read, written with the names the page uses
PAGE_FILES = {
    "README.md": [_files_train, _files_kb],
    "docs/finetune.md": [_files_train],
    "docs/rag.md": [_files_embed_pairs, _files_kb],
    "docs/export.md": [],
    "docs/eval.md": [],
    "docs/serve.md": [],
}
# page -> code run before its first block, defining names the page leaves to the reader
PRELUDES = {
    "README.md": "eval_items = {qa}  # [{{context, question, answers}}, ...]".format(
        qa=[{"context": q["context"], "question": q["question"], "answers": a["output"]}
            for q, a in zip(QA[:3], ALPACA)]),
    "docs/rag.md": "from ragtune.engine.client import LocalLLM\nllm = LocalLLM.load('gemma-3-270m')",
}
# page -> {path the page's shell commands write: what stands in for it}
STAND_INS = {
    "README.md": {"runs/embed": "embedder"},
    "docs/export.md": {"out/run1": "finetune"},
    "docs/serve.md": {"out/run1": "finetune"},
}
# blocks that list signatures (not code): the import runs and each listed parameter exists
SIGNATURE_BLOCKS = {"docs/eval.md:from ragtune.eval import context_recall,"}


class Page:
    def __init__(self, name: str, root: Path):
        self.name = name
        self.dir = root
        self.namespace: dict = {"__name__": "__docs__"}
        self.ran: list[str] = []
        self.failed: str | None = None


@pytest.fixture(scope="session")
def tiny_finetune(tmp_path_factory) -> Path:
    """A LoRA fine-tune output (2 steps) of a tiny gemma that llama.cpp can run (tests/export's):
    what `ragtune finetune llm` leaves."""
    from export.fixtures import make_exportable_llm

    import ragtune as rt

    d = tmp_path_factory.mktemp("finetune")
    base = make_exportable_llm(d / "base")
    _write_json(d / "train.json", ALPACA)
    out = d / "run"
    rt.finetune.lora.run(str(base), str(d / "train.json"), str(out), max_steps=2,
                         per_device_train_batch_size=2, cutoff_len=128)
    return out


@pytest.fixture(scope="session")
def docs_llm_dir(tmp_path_factory) -> Path:
    """The tiny gemma of tests/tiny_models.py with 4 layers: docs/finetune.md trains the top 4."""
    from tiny_models import make_tiny_llm

    return make_tiny_llm(tmp_path_factory.mktemp("models") / "docs-llm", num_layers=4)


@pytest.fixture(scope="session")
def pages(tmp_path_factory, docs_llm_dir, tiny_embedder_dir, request) -> dict[str, Page]:
    return {"_factory": tmp_path_factory, "_models": (docs_llm_dir, tiny_embedder_dir), "_request": request}


def _page(pages: dict, name: str) -> Page:
    if name in pages:
        return pages[name]
    factory = pages["_factory"]
    llm_dir, embedder_dir = pages["_models"]
    d = factory.mktemp("page-" + re.sub(r"\W", "_", name))
    (d / "gemma-3-270m").symlink_to(llm_dir, target_is_directory=True)
    (d / "all-MiniLM-L6-v2").symlink_to(embedder_dir, target_is_directory=True)
    (d / "ragtune_home").mkdir()
    prev = Path.cwd()
    os.chdir(d)
    try:
        for make in PAGE_FILES.get(name, []):
            make(d)
        for path, kind in STAND_INS.get(name, {}).items():
            src = embedder_dir if kind == "embedder" else pages["_request"].getfixturevalue("tiny_finetune")
            (d / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, d / path, symlinks=True)
    finally:
        os.chdir(prev)
    page = Page(name, d)
    if name in PRELUDES:
        page.namespace["__prelude__"] = PRELUDES[name]
    pages[name] = page
    return page


def _exec(page: Page, block: Block) -> None:
    code = compile(block.text, f"{block.file}:{block.line}", "exec")
    exec(code, page.namespace)


def run_python_block(block: Block, pages: dict, monkeypatch) -> None:
    page = _page(pages, block.file)
    monkeypatch.chdir(page.dir)
    monkeypatch.setenv("RAGTUNE_HOME", str(page.dir / "ragtune_home"))
    if "__prelude__" in page.namespace:
        exec(page.namespace.pop("__prelude__"), page.namespace)
    earlier = [b for b in BLOCKS if b.file == block.file and b.lang == "python" and b.index < block.index
               and b.id not in EXEMPT and b.id not in SIGNATURE_BLOCKS]
    for b in earlier:
        if b.id not in page.ran:
            run_python_block(b, pages, monkeypatch)
    if page.failed:
        pytest.fail(f"an earlier block of {block.file} failed ({page.failed}), and this one may use its names")
    try:
        _exec(page, block)
    except BaseException:
        page.failed = block.id
        raise
    finally:
        page.ran.append(block.id)


def check_signatures(block: Block) -> None:
    """``name(params) -> type`` lines (a listing, not code): the imports run, and each listed
    function has exactly the listed parameters, in that order, of the same kind."""
    import ast

    namespace: dict = {}
    lines = block.text.splitlines()
    exec("\n".join(ln for ln in lines if ln.startswith(("from ", "import "))), namespace)
    chunks, current = [], ""
    for ln in lines:
        code = ln.split("#")[0].rstrip()
        if ln.startswith(("from ", "import ")) or not code.strip():
            continue
        current += " " + code.strip()
        if current.count("(") == current.count(")"):
            chunks.append(current.strip())
            current = ""
    assert chunks and not current, "no signature found, or unbalanced parentheses"
    for chunk in chunks:
        fn = ast.parse(f"def {chunk}: ...").body[0]
        assert isinstance(fn, ast.FunctionDef)
        listed = [(a.arg, "positional") for a in fn.args.posonlyargs + fn.args.args] + \
                 [(a.arg, "keyword") for a in fn.args.kwonlyargs]
        assert fn.name in namespace, f"{fn.name} is listed but not imported"
        sig = inspect.signature(namespace[fn.name])
        real = [(p.name, "keyword" if p.kind is p.KEYWORD_ONLY else "positional") for p in sig.parameters.values()]
        assert listed == real, f"the docs list {fn.name}{listed}, the code has {fn.name}{sig}"


# -- config and data blocks --------------------------------------------------------------------
def check_yaml_block(block: Block, tmp_path: Path, monkeypatch) -> None:
    from ragtune.workflow.run import RunConfig, build_stages

    data = yaml.safe_load(block.text)
    assert isinstance(data, dict), "a YAML block that is not a mapping"
    assert "run_dir" in data, "only run configs are known here: add a loader for this kind of YAML"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text(block.text, encoding="utf-8")
    cfg = RunConfig.from_yaml(tmp_path / "config.yaml")
    assert build_stages(cfg)


def json_values(text: str) -> list:
    """A block of one or more JSON values (a JSONL example, or records spread over lines)."""
    decoder = json.JSONDecoder()
    values, i = [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return values
        value, i = decoder.raw_decode(text, i)
        values.append(value)


def check_json_block(block: Block, tmp_path: Path) -> None:
    text = re.sub(r"\{\.\.\.[^{}]*\.\.\.\}", "{}", block.text)   # `{...JSON Schema...}`: any object
    values = json_values(text)
    assert values
    for i, value in enumerate(values):
        if "response_format" in value:
            from ragtune.engine.constrained import parse_response_format

            parse_response_format(value["response_format"])
        elif "instruction" in value or "messages" in value:
            from ragtune.data import validate

            _write_json(tmp_path / f"{i}.json", [value])
            report = validate(str(tmp_path / f"{i}.json"))
            assert report.ok, report.summary()
        elif "query" in value:
            assert ("pos" in value and "neg" in value) or "corpus" in value, value


def check_toml_block(block: Block) -> None:
    """Entry points: each group is one a ragtune registry loads plugins from."""
    from ragtune.core.prompt import CHAT_TEMPLATES
    from ragtune.engine.base import ENGINES
    from ragtune.eval.base import METRICS
    from ragtune.finetune.base import METHODS
    from ragtune.rag.store import STORES

    groups = tomllib.loads(block.text)["project"]["entry-points"]
    known = {r.group for r in (METHODS, ENGINES, METRICS, STORES, CHAT_TEMPLATES)}
    assert set(groups) <= known, f"entry-point groups {sorted(set(groups) - known)} are no registry's"


# -- unlabelled blocks with a checkable claim --------------------------------------------------
def check_text_block(block: Block, tmp_path: Path, monkeypatch, capsys, pages) -> None:
    text = block.text
    if text.startswith("Please use the original text"):
        from ragtune.data.squad import DEFAULT_TEMPLATE

        assert text.strip() == DEFAULT_TEMPLATE.encode("unicode_escape").decode("ascii").strip(), DEFAULT_TEMPLATE
    elif text.startswith("TEMPLATE "):
        page = pages.get("docs/export.md")
        if page is None or "docs/export.md:from ragtune.export.job import ExportCon" not in page.ran:
            run_python_block(BY_ID["docs/export.md:from ragtune.export.job import ExportCon"], pages, monkeypatch)
            page = pages["docs/export.md"]
        modelfile = (page.dir / "out/run1-gguf/Modelfile").read_text(encoding="utf-8")
        template = text.split('"""')[1]
        assert f'TEMPLATE """{template}"""' in modelfile, modelfile
        for line in text.split('"""')[-1].strip().splitlines():
            assert line in modelfile.splitlines(), f"{line!r} not in the Modelfile:\n{modelfile}"
    elif text.startswith("$ ragtune "):
        check_transcript(block, tmp_path, monkeypatch, capsys)
    else:
        raise AssertionError("an unlabelled block with no check: give it a language, a check or an EXEMPT row")


TRANSCRIPT_FILES = {   # files a transcript's command reads, which the page describes but does not show
    "bad.yaml": "run_dir: runs/bad\ndata: {train: train.json}\nllm: {base: gemma-3-270m, deploi: builtin}\n",
}


def check_transcript(block: Block, tmp_path: Path, monkeypatch, capsys) -> None:
    from ragtune.cli import main

    monkeypatch.chdir(tmp_path)
    for name, content in TRANSCRIPT_FILES.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    lines = block.text.strip().splitlines()
    argv = shlex.split(lines[0][2:])
    assert argv[0] == "ragtune"
    main(argv[1:])
    out = capsys.readouterr()
    got = (out.out + out.err).strip()
    expected = "\n".join(lines[1:]).strip()
    pattern = ".*".join(re.escape(part.strip()) for part in expected.split("..."))
    assert re.match(pattern, got, re.S), f"expected (... = anything):\n{expected}\ngot:\n{got}"


# -- the tests -----------------------------------------------------------------------------------
def test_blocks_are_found():
    assert len(BLOCKS) >= 35, len(BLOCKS)
    assert len(BY_ID) == len(BLOCKS), "two blocks share an id"


def test_exemptions_name_existing_blocks():
    stale = sorted(set(EXEMPT) - set(BY_ID))
    assert not stale, f"EXEMPT rows whose block no longer exists (remove or update them): {stale}"
    for table in (SIGNATURE_BLOCKS,):
        assert table <= set(BY_ID), sorted(table - set(BY_ID))


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_block(block: Block, tmp_path, monkeypatch, capsys, pages):
    if block.id in EXEMPT:
        pytest.skip(EXEMPT[block.id])
    if block.id in SIGNATURE_BLOCKS:
        check_signatures(block)
    elif block.lang in SHELL:
        run_shell_block(block, tmp_path, monkeypatch)
    elif block.lang == "python":
        run_python_block(block, pages, monkeypatch)
    elif block.lang in ("yaml", "yml"):
        check_yaml_block(block, tmp_path, monkeypatch)
    elif block.lang == "json":
        check_json_block(block, tmp_path)
    elif block.lang == "toml":
        check_toml_block(block)
    elif block.lang == "":
        check_text_block(block, tmp_path, monkeypatch, capsys, pages)
    else:
        raise AssertionError(f"no check for ```{block.lang} blocks")


if __name__ == "__main__":   # list the ids
    for b in BLOCKS:
        print(b.id, file=sys.stdout)
