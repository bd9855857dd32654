"""Vector stores, registered by name: ``memory`` (numpy, default) and ``milvus`` (pymilvus; Milvus
Lite file by default, a server URI for clusters). Vectors are keyed by (collection, node id), where
the collection name encodes the document, the node group and the embedder fingerprint, so a
re-tuned embedder gets fresh vectors and an unchanged one reuses them (also across runs for Milvus).
"""
from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Any, Sequence

from ..core.errors import BackendError, ConfigError
from ..core.registry import Registry


class Store(abc.ABC):
    name = "store"

    @abc.abstractmethod
    def ids(self, collection: str) -> set[str]:
        """Node ids already stored in ``collection`` (empty if it does not exist)."""

    @abc.abstractmethod
    def add(self, collection: str, ids: Sequence[str], vectors, texts: Sequence[str]) -> None:
        """Insert rows (id, normalized vector, text), creating the collection if needed."""

    @abc.abstractmethod
    def delete(self, collection: str, ids: Sequence[str]) -> None:
        """Remove these node ids from ``collection``."""

    @abc.abstractmethod
    def search(self, collection: str, query_vec, topk: int) -> list[tuple[str, float]]:
        """(node id, cosine similarity) best first."""


# the built-in stores register below, in this module; plugins through the entry point group
STORES: Registry[type[Store]] = Registry("store", "ragtune.stores")


@STORES.register("memory")
class MemoryStore(Store):
    """numpy in this process: exact cosine search, nothing persisted."""
    name = "memory"

    def __init__(self):
        self._data: dict[str, tuple[list[str], Any]] = {}

    def ids(self, collection):
        return set(self._data.get(collection, ([], None))[0])

    def add(self, collection, ids, vectors, texts):
        import numpy as np

        old_ids, old = self._data.get(collection, ([], None))
        vectors = np.asarray(vectors, dtype=np.float32)
        merged = vectors if old is None else np.vstack([old, vectors])
        self._data[collection] = (list(old_ids) + list(ids), merged)

    def delete(self, collection, ids):
        drop = set(ids)
        old_ids, old = self._data.get(collection, ([], None))
        keep = [i for i, x in enumerate(old_ids) if x not in drop]
        if old is not None:
            self._data[collection] = ([old_ids[i] for i in keep], old[keep])

    def search(self, collection, query_vec, topk):
        import numpy as np

        ids, mat = self._data.get(collection, ([], None))
        if mat is None or not len(ids):
            return []
        scores = mat @ np.asarray(query_vec, dtype=np.float32)
        k = min(topk, len(ids))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(ids[i], float(scores[i])) for i in top]


@STORES.register("milvus")
class MilvusStore(Store):
    """``MilvusStore()`` -> Milvus Lite file ``$RAGTUNE_HOME/milvus.db``; ``MilvusStore("x.db")``;
    ``MilvusStore("http://host:19530", token=...)`` for a server."""

    name = "milvus"

    def __init__(self, uri: str | os.PathLike | None = None, token: str = "", **client_kwargs):
        try:
            from pymilvus import MilvusClient
        except ImportError:  # pragma: no cover - pymilvus is a dependency of the rag extra
            raise BackendError("the milvus store needs pymilvus", hint="pip install 'pymilvus[milvus_lite]'") from None
        if uri is None:
            from ..core.paths import ragtune_home

            uri = ragtune_home() / "milvus.db"
        uri = os.fspath(uri)
        if not uri.startswith(("http://", "https://", "tcp://", "unix:")):
            Path(uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
            uri = str(Path(uri).expanduser())
        self.uri = uri
        try:
            self.client = MilvusClient(uri=uri, token=token, **client_kwargs)
        except Exception as exc:   # pymilvus logs the cause and raises "Open local milvus failed"
            if not uri.endswith(".db"):
                raise BackendError(f"cannot connect to Milvus at {uri}: {exc}") from None
            raise _milvus_lite_error(Path(uri), exc) from None
        self._loaded: set[str] = set()

    def _exists(self, collection):
        if collection in self._loaded:
            return True
        if not self.client.has_collection(collection):
            return False
        self.client.load_collection(collection)  # a collection from an earlier run starts released
        self._loaded.add(collection)
        return True

    def ids(self, collection):
        if not self._exists(collection):
            return set()
        out: set[str] = set()
        it = self.client.query_iterator(collection, batch_size=1000, filter='id != ""', output_fields=["id"])
        while True:
            batch = it.next()
            if not batch:
                it.close()
                break
            out.update(r["id"] for r in batch)
        return out

    def add(self, collection, ids, vectors, texts):
        import numpy as np

        vectors = np.asarray(vectors, dtype=np.float32)
        if not self._exists(collection):
            self.client.create_collection(collection, dimension=int(vectors.shape[1]), primary_field_name="id",
                                          id_type="string", max_length=64, vector_field_name="vector",
                                          metric_type="COSINE", auto_id=False)
            self._loaded.add(collection)
        rows = [{"id": i, "vector": v.tolist()} for i, v in zip(ids, vectors)]
        for start in range(0, len(rows), 1000):
            self.client.insert(collection, rows[start:start + 1000])
        self.client.flush(collection)

    def delete(self, collection, ids):
        ids = list(ids)
        if ids and self._exists(collection):
            for start in range(0, len(ids), 1000):
                self.client.delete(collection, ids=ids[start:start + 1000])

    def search(self, collection, query_vec, topk):
        if not self._exists(collection):
            return []
        res = self.client.search(collection, data=[list(map(float, query_vec))], limit=topk,
                                 search_params={"metric_type": "COSINE"}, output_fields=["id"])
        return [(hit["id"], float(hit["distance"])) for hit in res[0]]

    def drop(self, collection):
        if self._exists(collection):
            self.client.drop_collection(collection)
            self._loaded.discard(collection)


def _milvus_lite_error(path: Path, exc: Exception) -> BackendError:
    """Why a Milvus Lite file would not open, found after the fact (pymilvus only says "failed"):
    milvus-lite keeps a directory at the .db path and holds an exclusive flock on its LOCK file."""
    hint = "use another store path (store='other.db'), or the memory store"
    if path.exists() and not path.is_dir():
        return BackendError(f"Milvus Lite store {path} exists but is a file, not a Milvus Lite data directory",
                            hint=hint)
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK):
        return BackendError(f"Milvus Lite store {path}: {target} is not writable", hint=hint)
    lock = path / "LOCK"
    if lock.exists():
        import fcntl

        with open(lock, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
            except OSError:
                return BackendError(f"Milvus Lite store {path} is locked by another process (Milvus Lite opens "
                                    "a .db from one process at a time)",
                                    hint="stop the other process (a running server or notebook), or " + hint)
    return BackendError(f"Milvus Lite store {path} could not be opened: {exc}", hint=hint)


def as_store(store: Any) -> Store:
    if store is None:
        return MemoryStore()
    if isinstance(store, Store):
        return store
    if isinstance(store, str) and store in STORES:
        return STORES.get(store)()
    if isinstance(store, dict):
        kind = store.get("type", "memory")
        return STORES.get(kind)(**{k: v for k, v in store.items() if k != "type"})
    if isinstance(store, (str, os.PathLike)) and (os.fspath(store).endswith(".db") or "://" in os.fspath(store)):
        return MilvusStore(store)
    raise ConfigError(f"unknown store {store!r}",
                      hint="use 'memory', 'milvus', a Milvus Lite .db path, a Milvus URI, or {'type': 'milvus', 'uri': ...}")
