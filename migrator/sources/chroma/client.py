"""Read HridaAI's Chroma vector store (embedded PersistentClient copy, or a Chroma server).

Reading goes through ``chromadb`` itself, never through the store's files: after
``sync_threshold`` (1000) writes Chroma purges ``embeddings_queue`` and the vectors live only in
the HNSW segment files, so raw SQLite cannot recover them (hridaai-data-layer.md §4.4).

Opening a store with chromadb may migrate and rewrite it, so the path functions must be given
a *copy* (the snapshot stage makes one).  The read functions take a chromadb client, so the
same code serves a snapshot directory and a Chroma server (``http_client``).

Order: ``collection.get(limit, offset)`` pages in the metadata segment's insertion order, which
is the same on every call and in every process for an unchanged store; ``start`` is therefore an
ordinal that resumes a crashed run on the same snapshot.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from migrator.errors import UsageError

log = logging.getLogger(__name__)

SPACES = ("cosine", "l2", "ip")
DEFAULT_SPACE = "l2"  # collections made before Open WebUI 0.3.33 carry no hnsw:space
_FULL = ("embeddings", "documents", "metadatas")
_SCAN_PAGE = 1000


@dataclass(frozen=True)
class CollectionInfo:
    """One Chroma collection as the migrator sees it."""

    name: str
    id: str
    count: int
    dimension: int | None
    space: str
    metadata_keys: list[str] = field(default_factory=list)
    missing_vectors: int = 0


@dataclass(frozen=True)
class Chunk:
    """One stored item. ``embedding`` is float32 1-D, or None when the store lost that vector."""

    id: str
    embedding: np.ndarray | None
    document: str | None
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class Batch:
    """Chunks at ordinal positions ``start`` .. ``start + len(chunks) - 1`` of a collection."""

    start: int
    chunks: list[Chunk]

    @property
    def end(self) -> int:
        """Ordinal position just after this batch: the ``start`` to resume from."""
        return self.start + len(self.chunks)


def _settings() -> Any:
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False, allow_reset=False)


def _writable(path: str) -> bool:
    # Mode bits too, not only access(): root may write anywhere, yet a store without write bits
    # is a protected original (like shared fixtures) that chromadb must not migrate in place.
    return os.access(path, os.W_OK) and bool(os.stat(path).st_mode & 0o222)


@functools.lru_cache(maxsize=None)
def _client_for(path: str) -> Any:
    import chromadb

    return chromadb.PersistentClient(path=path, settings=_settings())


def open_client(store_path: str | os.PathLike[str]) -> Any:
    """Return a chromadb PersistentClient for the store copy at ``store_path`` (cached per path).

    Only ``store_path`` is opened; chromadb may rewrite files there, so pass a snapshot copy.
    """
    path = os.path.realpath(os.fspath(store_path))
    if not os.path.isfile(os.path.join(path, "chroma.sqlite3")):
        raise UsageError("not a Chroma store: no chroma.sqlite3", detail=path,
                         hint="point at a copy of HridaAI's DATA_DIR/vector_db")
    if not all(_writable(p) for p in (path, os.path.join(path, "chroma.sqlite3"))):
        raise UsageError("the Chroma store is read-only, and chromadb writes to a store it opens",
                         detail=path, hint="read a writable copy (the snapshot stage makes one)")
    return _client_for(path)


def http_client(
    host: str,
    *,
    port: int = 8000,
    ssl: bool = False,
    headers: dict[str, str] | None = None,
    tenant: str | None = None,
    database: str | None = None,
) -> Any:
    """Return a chromadb HttpClient configured like HridaAI's CHROMA_HTTP_* settings."""
    import chromadb

    kwargs: dict[str, Any] = {}
    if tenant:
        kwargs["tenant"] = tenant
    if database:
        kwargs["database"] = database
    return chromadb.HttpClient(
        host=host, port=port, ssl=ssl, headers=headers or {}, settings=_settings(), **kwargs
    )


def _space_of_metadata(metadata: dict[str, Any] | None) -> str:
    # hnsw:space metadata is what the HNSW index was built with; config_json_str is rewritten
    # with defaults by Chroma's migrations and says 'l2' for old collections whatever they use.
    space = (metadata or {}).get("hnsw:space", DEFAULT_SPACE)
    if space not in SPACES:
        raise ValueError(f"unknown hnsw:space {space!r}; expected one of {SPACES}")
    return space


def _is_missing_vector_error(exc: Exception) -> bool:
    return "Error finding id" in str(exc)


def _vectors_by_id(col: Any, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Fetch vectors for ``ids``, bisecting around ids whose vector the store lost."""
    try:
        got = col.get(ids=list(ids), include=["embeddings"])
    except Exception as exc:  # chromadb raises InternalError('Error finding id') for the batch
        if not _is_missing_vector_error(exc):
            raise
        if len(ids) == 1:
            return {}
        mid = len(ids) // 2
        return {**_vectors_by_id(col, ids[:mid]), **_vectors_by_id(col, ids[mid:])}
    return {i: _as_f32(e) for i, e in zip(got["ids"], got["embeddings"])}


def _as_f32(embedding: Any) -> np.ndarray:
    # chromadb hands back float64 made from stored float32 values: the cast back is exact.
    return np.asarray(embedding, dtype=np.float32).reshape(-1)


def _page(col: Any, include: Sequence[str], limit: int, offset: int) -> dict[str, Any]:
    """One ``get()`` page; embeddings are float32 arrays, or None where the store lost them."""
    try:
        got = col.get(include=list(include), limit=limit, offset=offset)
    except Exception as exc:
        if "embeddings" not in include or not _is_missing_vector_error(exc):
            raise
        rest = [x for x in include if x != "embeddings"]
        got = col.get(include=rest, limit=limit, offset=offset)
        found = _vectors_by_id(col, got["ids"])
        log.warning("%s: %d of %d vectors missing at offset %d",
                    col.name, len(got["ids"]) - len(found), len(got["ids"]), offset)
        return {**got, "embeddings": [found.get(i) for i in got["ids"]]}
    if "embeddings" in include:
        got = {**got, "embeddings": [_as_f32(e) for e in got["embeddings"]]}
    return got


def _scan(col: Any) -> tuple[int | None, list[str], int]:
    """Walk a collection once: (dimension, sorted metadata keys, missing vectors)."""
    dims: set[int] = set()
    keys: set[str] = set()
    missing = 0
    for offset in range(0, col.count(), _SCAN_PAGE):
        got = _page(col, ("embeddings", "metadatas"), _SCAN_PAGE, offset)
        for emb in got["embeddings"]:
            if emb is None:
                missing += 1
            else:
                dims.add(len(emb))
        for meta in got["metadatas"]:
            keys.update(meta or ())
    if len(dims) > 1:
        raise ValueError(f"collection {col.name} mixes vector dimensions {sorted(dims)}")
    return (dims.pop() if dims else None), sorted(keys), missing


def _peek(col: Any) -> tuple[int | None, list[str], int]:
    """Dimension and metadata keys from the first page only (lost vectors are found by the load, not here)."""
    dimension = getattr(getattr(col, "_model", None), "dimension", None)
    got = _page(col, ("embeddings", "metadatas"), _SCAN_PAGE, 0) if col.count() else {"embeddings": [],
                                                                                       "metadatas": []}
    if dimension is None:
        dimension = next((len(e) for e in got["embeddings"] if e is not None), None)
    keys = sorted({k for m in got["metadatas"] for k in (m or ())})
    return dimension, keys, 0


def _info(col: Any, scan: bool = True) -> CollectionInfo:
    dimension, keys, missing = _scan(col) if scan else _peek(col)
    if dimension is None:  # empty, or every vector lost: fall back to what Chroma recorded
        dimension = getattr(getattr(col, "_model", None), "dimension", None)
    return CollectionInfo(
        name=col.name,
        id=str(col.id),
        count=col.count(),
        dimension=dimension,
        space=_space_of_metadata(col.metadata),
        metadata_keys=keys,
        missing_vectors=missing,
    )


def _get_collection(client: Any, name: str) -> Any:
    return client.get_collection(name=name, embedding_function=None)


def describe_client(client: Any, *, scan: bool = True) -> list[CollectionInfo]:
    """Describe every collection reachable through ``client``, sorted by name.

    scan=True reads every vector and metadata once (dimension, all keys, lost vectors); scan=False only the first
    page (what run and verify need: they meet lost vectors themselves).
    """
    names = sorted(c if isinstance(c, str) else c.name for c in client.list_collections())
    return [_info(_get_collection(client, n), scan) for n in names]


def iter_batches_client(
    client: Any, collection: str, *, batch_size: int = 1000, start: int = 0
) -> Iterator[Batch]:
    """Yield the chunks of ``collection`` from ordinal ``start`` in batches of ``batch_size``."""
    if batch_size < 1 or start < 0:
        raise ValueError("batch_size must be >= 1 and start >= 0")
    col = _get_collection(client, collection)
    total = col.count()
    for offset in range(start, total, batch_size):
        got = _page(col, _FULL, min(batch_size, total - offset), offset)
        chunks = [
            Chunk(id=i, embedding=e, document=d, metadata=dict(m) if m is not None else None)
            for i, e, d, m in zip(got["ids"], got["embeddings"], got["documents"], got["metadatas"])
        ]
        if not chunks:
            return
        yield Batch(start=offset, chunks=chunks)


def describe(store_path: str | os.PathLike[str]) -> list[CollectionInfo]:
    """Describe every collection of the store copy at ``store_path``, sorted by name."""
    return describe_client(open_client(store_path))


def iter_batches(
    store_path: str | os.PathLike[str], collection: str, *, batch_size: int = 1000, start: int = 0
) -> Iterator[Batch]:
    """Yield chunks of ``collection`` in the store copy at ``store_path`` (see iter_batches_client)."""
    return iter_batches_client(
        open_client(store_path), collection, batch_size=batch_size, start=start
    )
