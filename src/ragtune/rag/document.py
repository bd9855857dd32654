"""``Document``: a knowledge base on disk, split into named node groups.

    docs = Document("KB", embed="all-MiniLM-L6-v2")            # store: memory (default) | "milvus" | path.db
    docs.create_node_group("split_sent", transform=lambda s: s.split("\\n"))
    docs.create_node_group("windows", transform=TokenSplitter(128, 16), parent="split_sent")
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..core.errors import BackendError, ConfigError, DataError
from ..core.log import get_logger
from .splitters import SPLITTERS

log = get_logger(__name__)

ROOT = "__root__"
SUFFIXES = (".txt", ".md", ".json", ".jsonl", ".pdf")
_TEXT_KEYS = ("content", "text", "context", "passage", "page_content")


@dataclass
class Node:
    id: str
    text: str
    group: str
    parent: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    score: float | None = None

    def get_text(self) -> str:
        return self.text

    def get_content(self) -> str:
        return self.text

    def with_score(self, score: float) -> "Node":
        return Node(self.id, self.text, self.group, self.parent, dict(self.metadata), score)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "content": self.text, "score": self.score, "group": self.group,
                "metadata": self.metadata}


def _node_id(*parts: Any) -> str:
    return hashlib.sha1("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()[:32]


def _json_texts(rows: Any, file: str) -> list[str]:
    if isinstance(rows, dict):
        rows = [rows]
    if not isinstance(rows, list):
        raise DataError(f"expected a list of strings or objects, got {type(rows).__name__}", file=file)
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, str):
            out.append(row)
            continue
        if not isinstance(row, dict):
            raise DataError(f"expected a string or an object, got {type(row).__name__}", file=file, record=i)
        key = next((k for k in _TEXT_KEYS if isinstance(row.get(k), str)), None)
        if key is None:
            raise DataError(f"no text field; expected one of {list(_TEXT_KEYS)}", file=file, record=i,
                            field=_TEXT_KEYS[0])
        out.append(row[key])
    return out


def _text_file(path: Path) -> str:
    """UTF-8 text (the one data reader's decoding); NUL bytes mean a binary file named .txt."""
    from ..data.readers import read_text

    text = read_text(path)
    if "\x00" in text:
        raise DataError(f"looks like a binary file (NUL byte at offset {text.index(chr(0))}), not text",
                        file=str(path))
    return text


def read_texts(path: Path) -> list[str]:
    """The texts of one file: whole file (.txt/.md), one per record (.json/.jsonl), one per page (.pdf)."""
    file = str(path)
    suffix = path.suffix.lower()
    if suffix in (".txt", ".md"):
        return [_text_file(path)]
    if suffix == ".json":
        try:
            rows = json.loads(_text_file(path))
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", file=file) from None
        if isinstance(rows, dict) and isinstance(rows.get("data"), list):
            rows = rows["data"]          # {"data": [...]}, as every other ragtune reader accepts
        return _json_texts(rows, file)
    if suffix == ".jsonl":
        from ..data.readers import read_records

        return _json_texts([r.data for r in read_records(path)], file)
    if suffix == ".pdf":
        try:
            from pypdf import PdfReader
            from pypdf.errors import PdfReadError
        except ImportError:
            raise BackendError(f"{file}: reading PDFs needs pypdf", hint="pip install pypdf") from None
        try:
            return [page.extract_text() or "" for page in PdfReader(file).pages]
        except (PdfReadError, OSError, ValueError) as exc:
            raise DataError(f"not a readable PDF: {exc}", file=file) from None
    raise DataError(f"unsupported file type {path.suffix}; supported: {', '.join(SUFFIXES)}", file=file)


class Document:
    def __init__(self, dataset_path: str | os.PathLike, embed: Any = None, store: Any = None,
                 manager: bool = False):
        # ``manager`` is accepted for LazyLLM compatibility (its web UI); ragtune has none.
        self.path = Path(dataset_path).expanduser()
        if not self.path.exists():
            raise DataError("knowledge base path does not exist", file=str(self.path))
        from .store import as_store

        self.embed_source = embed
        self._embedder = None
        self.store = as_store(store)
        self._groups: dict[str, tuple[Callable[[str], list[str]], str]] = {}
        self._nodes: dict[str, list[Node]] = {}
        self.skipped: list[tuple[str, str]] = []   # (file, why) of unreadable files of a KB directory

    # -- files and groups --------------------------------------------------------------------
    def files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        files = sorted(p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(self.path).parts))
        if not files:
            raise DataError(f"no {'/'.join(SUFFIXES)} files inside", file=str(self.path))
        return files

    @property
    def key(self) -> str:
        return str(self.path.resolve())

    def create_node_group(self, name: str, transform: Callable[[str], list[str]] | str = "line",
                          parent: str = ROOT, **splitter_kwargs: Any) -> "Document":
        """``transform``: a callable text -> chunks, a splitter object, or a built-in splitter name
        (``line``, ``sentence``, ``token``) with its keyword arguments."""
        if name == ROOT or name in self._groups:
            raise ConfigError(f"node group '{name}' already exists")
        if parent != ROOT and parent not in self._groups:
            raise ConfigError(f"parent node group '{parent}' does not exist",
                              hint="valid: " + ", ".join([ROOT, *self._groups]))
        if isinstance(transform, str):
            if transform not in SPLITTERS:
                raise ConfigError(f"unknown splitter '{transform}'", hint="valid: " + ", ".join(SPLITTERS))
            transform = SPLITTERS[transform](**splitter_kwargs)
        if not callable(transform):
            raise ConfigError(f"transform of node group '{name}' must be callable text -> list of texts")
        self._groups[name] = (transform, parent)
        self._nodes.pop(name, None)
        return self

    def group_names(self) -> list[str]:
        return [ROOT, *self._groups]

    def nodes(self, group: str = ROOT) -> list[Node]:
        if group in self._nodes:
            return self._nodes[group]
        if group == ROOT:
            nodes = []
            for f, texts in self._read_files():
                rel = str(f.relative_to(self.path)) if self.path.is_dir() else f.name
                for i, text in enumerate(texts):
                    if text.strip():
                        nodes.append(Node(_node_id(rel, i, text), text, ROOT, None, {"source": rel, "index": i}))
        elif group in self._groups:
            transform, parent = self._groups[group]
            nodes = []
            for p in self.nodes(parent):
                chunks = transform(p.text)
                if isinstance(chunks, str):
                    chunks = [chunks]
                # ids from content, not position: editing one line of a file keeps the other
                # lines' ids (and their cached vectors in a persistent store)
                key = (p.metadata.get("source"), p.metadata.get("index")) if p.group == ROOT else p.id
                seen: dict[str, int] = {}
                for i, chunk in enumerate(chunks):
                    if isinstance(chunk, str) and chunk.strip():
                        seen[chunk] = seen.get(chunk, -1) + 1
                        nodes.append(Node(_node_id(group, key, chunk, seen[chunk]), chunk, group, p.id,
                                          {**p.metadata, "chunk": i}))
        else:
            raise ConfigError(f"unknown node group '{group}'", hint="valid: " + ", ".join(self.group_names()))
        self._nodes[group] = nodes
        return nodes

    def _read_files(self) -> list[tuple[Path, list[str]]]:
        """Every file's texts. In a KB directory an unreadable file (not UTF-8, binary, bad JSON) is
        skipped with a warning that counts and names them, so one stray file does not abort the
        whole knowledge base; a single file given as the KB, or a directory where nothing is
        readable, is an error."""
        files = self.files()
        if self.path.is_file():
            return [(files[0], read_texts(files[0]))]
        read, self.skipped = [], []
        for f in files:
            try:
                read.append((f, read_texts(f)))
            except DataError as exc:
                self.skipped.append((str(f.relative_to(self.path)), exc.message))
        if self.skipped:
            shown = "; ".join(why for _, why in self.skipped[:5])   # each names its file
            more = f" (and {len(self.skipped) - 5} more)" if len(self.skipped) > 5 else ""
            if not read:
                raise DataError(f"none of its {len(files)} files could be read: {shown}{more}", file=str(self.path))
            log.warning("knowledge base %s: skipped %d of %d files that cannot be read: %s%s", self.path,
                        len(self.skipped), len(files), shown, more)
        return read

    # -- embedding ----------------------------------------------------------------------------
    @property
    def embedder(self):
        if self._embedder is None:
            if self.embed_source is None:
                raise ConfigError("this Document has no embed model; cosine retrieval needs one",
                                  hint="Document(path, embed='all-MiniLM-L6-v2'), or Retriever(similarity='bm25')")
            from ..models.embedder import as_embedder

            self._embedder = as_embedder(self.embed_source)
        return self._embedder

    def reload_embedder(self) -> None:
        """Forget the loaded embedder (e.g. after its TrainableModule was fine-tuned)."""
        self._embedder = None

    def __repr__(self) -> str:
        return f"Document({str(self.path)!r}, groups={self.group_names()}, store={self.store.name})"
