"""Read a Chroma store's own files (chroma.sqlite3 + HNSW segments) exactly as chromadb's get would.

Same contract as :func:`migrator.sources.chroma.iter_batches_client`: chunks in ascending
``embeddings.id`` of the collection's metadata segment (chromadb's ``get(limit, offset)`` order),
documents and metadata decoded like chromadb's SQLite metadata reader, vectors bit-identical.

What comes from where, per collection:

* ids, documents, metadata: always chroma.sqlite3 (the metadata segment is refused unless it has
  applied every queued write of the collection, so chromadb would not replay anything into it);
* the ``embeddings_queue`` rows chromadb replays in memory when it opens the collection (those
  newer than the vector segment's ``max_seq_id``, all of them for a segment never persisted) are
  replayed here the same way (:mod:`migrator.sources.chroma.queue`): an id they leave with a
  vector takes it from its last such row;
* any other vector of an id in the persisted id map is read from the HNSW files;
* every other vector (a queue this reader refuses, an id chromadb would not find) is fetched
  through ``fallback_col`` (a chromadb collection) with ``get(ids=...)``, None where chromadb has
  none; without ``fallback_col`` such a collection is refused.

Anything outside the known schema (migrations, segment types, array metadata, unusual keys or
value types, an unexpected HNSW header, a truncated file, a pickle with classes) is refused: the
reader returns None and logs why, and the caller reads that store or collection with chromadb.
The one check made while iterating: a metadata value stored with a SQLite type chromadb never
writes raises :class:`UnexpectedValue` (re-read from that batch's ``start`` with chromadb).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from migrator.sources.chroma import queue as queue_mod
from migrator.sources.chroma.client import Batch, Chunk, _vectors_by_id
from migrator.sources.chroma.hnsw import PICKLE_FILE, HnswRefused, HnswSegment, load_id_to_label

log = logging.getLogger(__name__)

_MIGRATIONS = frozenset(
    [("embeddings_queue", 1), ("embeddings_queue", 2)]
    + [("metadb", v) for v in range(1, 7)] + [("sysdb", v) for v in range(1, 11)])
_TABLES = ("collections", "collection_metadata", "segments", "segment_metadata", "embeddings",
           "embedding_metadata", "embedding_metadata_array", "max_seq_id", "embeddings_queue")
_METADATA_SEGMENT = "urn:chroma:segment/metadata/sqlite"
_VECTOR_SEGMENT = "urn:chroma:segment/vector/hnsw-local-persisted"
_DOC_KEY = "chroma:document"
_SPACES = ("cosine", "l2", "ip")
_SQL_VARS = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999  # host parameter limit


class _Refused(Exception):
    """A collection this reader cannot reproduce exactly (the message says why)."""


def _store_problem(conn: sqlite3.Connection) -> str | None:
    """Why the store's schema is not the one this reader knows, or None."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    missing = [t for t in ("migrations", *_TABLES) if t not in tables]
    if missing:
        return f"tables missing: {missing}"
    applied = set(conn.execute("SELECT dir, version FROM migrations"))
    if applied != _MIGRATIONS:
        return f"unknown migration set (extra {sorted(applied - _MIGRATIONS)}, missing {sorted(_MIGRATIONS - applied)})"
    types = {r[0] for r in conn.execute("SELECT DISTINCT type FROM segments")}
    if not types <= {_METADATA_SEGMENT, _VECTOR_SEGMENT}:
        return f"unknown segment types {sorted(types - {_METADATA_SEGMENT, _VECTOR_SEGMENT})}"
    bad = [t for (t,) in conn.execute("SELECT DISTINCT topic FROM embeddings_queue")
           if not queue_mod.TOPIC.fullmatch(t)]
    return f"unknown queue topics {bad[:3]}" if bad else None


def open_store(store_path: str | os.PathLike[str]) -> DirectStore | None:
    """Open the store at ``store_path`` read-only, or None (reason logged) if its layout is unknown.

    The files must not change while open (``immutable=1``): pass a private snapshot copy.
    """
    path = os.path.realpath(os.fspath(store_path))
    db = os.path.join(path, "chroma.sqlite3")
    if not os.path.isfile(db):
        log.info("direct Chroma read refused for %s: no chroma.sqlite3", path)
        return None
    try:
        # one thread at a time, not always the same one (the load reads each next batch in a worker thread)
        conn = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        problem = _store_problem(conn)
    except sqlite3.Error as exc:
        log.info("direct Chroma read refused for %s: %s", path, exc)
        return None
    if problem:
        conn.close()
        log.info("direct Chroma read refused for %s: %s", path, problem)
        return None
    return DirectStore(path, conn)


class DirectStore:
    """A Chroma store opened for direct reading; hands out one reader per collection."""

    def __init__(self, path: str, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._queue: queue_mod.QueueIndex | None = None
        self.lock = threading.RLock()  # readers share the connection: one statement sequence at a time

    @property
    def queue(self) -> queue_mod.QueueIndex:
        """Which queue rows belong to which collection (one scan of embeddings_queue, on first use)."""
        with self.lock:
            if self._queue is None:
                self._queue = queue_mod.QueueIndex(self._conn)
            return self._queue

    @property
    def conn(self) -> sqlite3.Connection:
        """The read-only connection to chroma.sqlite3 (for chroma_catalog)."""
        return self._conn

    def reader(self, collection_name: str, fallback_col: Any = None) -> CollectionReader | None:
        """Reader for ``collection_name``, or None (reason logged) if it cannot be read exactly.

        ``fallback_col``: the chromadb collection of the same store, used for vectors not
        certainly in the HNSW files; without it, a collection holding such vectors is refused.
        """
        try:
            with self.lock:
                return CollectionReader(self._conn, self.path, collection_name, fallback_col, self.queue, self.lock)
        except (_Refused, HnswRefused) as exc:
            log.info("direct Chroma read refused for collection %s: %s", collection_name, exc)
            return None

    def close(self) -> None:
        """Close the SQLite connection, once no reader is using it: a reader's thread may still be reading a batch
        when its run is cancelled (closing a connection another thread is using crashes the process); a read after
        this raises sqlite3.ProgrammingError instead."""
        with self.lock:
            self._conn.close()


def _one(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> Any:
    row = conn.execute(sql, args).fetchone()
    return row[0] if row else None


def _space_agreed(conn: sqlite3.Connection, coll_id: str, vector_seg: str, schema: str | None) -> str:
    """The HNSW space: every place that records it must agree (config_json_str is ignored:
    migrations rewrite it with defaults)."""
    found = {r[0] for r in conn.execute(
        "SELECT str_value FROM collection_metadata WHERE collection_id=? AND key='hnsw:space' UNION "
        "SELECT str_value FROM segment_metadata WHERE segment_id=? AND key='hnsw:space'",
        (coll_id, vector_seg))}
    if schema is None:
        raise _Refused("no schema_str: which space chromadb applies is not certain")
    vector_index = (json.loads(schema).get("keys", {}).get("#embedding", {})
                    .get("float_list", {}).get("vector_index", {}).get("config", {}))
    if "space" in vector_index:
        found.add(vector_index["space"])
    if len(found) > 1 or not found <= set(_SPACES):
        raise _Refused(f"ambiguous or unknown hnsw space {sorted(map(str, found))}")
    return found.pop() if found else "l2"


def _check_metadata(conn: sqlite3.Connection, seg: str) -> None:
    """Refuse metadata chromadb decodes in ways this reader does not mirror."""
    base = "SELECT 1 FROM embeddings e JOIN {t} m ON m.id = e.id WHERE e.segment_id = ? AND {c} LIMIT 1"
    checks = {  # both use an index: arrays by id, and the partial (key, string_value) index
        "array metadata values": ("embedding_metadata_array", "1"),
        "string keys beginning with 'chroma:document' other than 'chroma:document'": (
            "embedding_metadata", "m.key GLOB 'chroma:document?*' AND m.string_value IS NOT NULL"),
    }
    for what, (table, cond) in checks.items():
        if _one(conn, base.format(t=table, c=cond), (seg,)):
            raise _Refused(f"collection has {what}")


class UnexpectedValue(ValueError):
    """A metadata value stored with a SQLite type chromadb never writes (hand-edited store);
    raised during iteration: re-read the collection with chromadb from the failing batch."""


class CollectionReader:
    """Direct reader of one collection; see the module docstring for the rules.

    ``count``: chunks in the collection; ``queue_count``: how many of their vectors come from the embeddings queue;
    ``fallback_count``: how many are fetched through ``fallback_col`` (neither in the files nor resolved from the
    queue).
    """

    def __init__(self, conn: sqlite3.Connection, root: str, name: str, fallback_col: Any,
                 queue: queue_mod.QueueIndex, lock: Any = None) -> None:
        rows = conn.execute("SELECT id, dimension, schema_str FROM collections WHERE name=?",
                            (name,)).fetchall()
        if len(rows) != 1:
            raise _Refused(f"{len(rows)} collections named {name!r}")
        coll_id, dim, schema = rows[0]
        segs = dict(conn.execute("SELECT type, id FROM segments WHERE collection=?", (coll_id,)))
        if set(segs) != {_METADATA_SEGMENT, _VECTOR_SEGMENT} or conn.execute(
                "SELECT count(*) FROM segments WHERE collection=?", (coll_id,)).fetchone()[0] != 2:
            raise _Refused("not exactly one metadata and one HNSW vector segment")
        self._conn, self._seg, self._fallback, self._dim = conn, segs[_METADATA_SEGMENT], fallback_col, dim
        self._lock = lock or threading.RLock()
        _check_metadata(conn, self._seg)
        seq = "SELECT seq_id FROM max_seq_id WHERE segment_id=?"
        meta_seq = _one(conn, seq, (self._seg,)) or 0
        vec_seq = _one(conn, seq, (segs[_VECTOR_SEGMENT],)) or 0
        if queue.last(coll_id) > meta_seq:
            raise _Refused("metadata segment is behind embeddings_queue (chromadb would replay it)")
        id_rows = conn.execute("SELECT id, embedding_id FROM embeddings WHERE segment_id=? ORDER BY id",
                               (self._seg,)).fetchall()
        self._rowids = np.fromiter((r[0] for r in id_rows), dtype=np.int64, count=len(id_rows))
        self._ids = [r[1] for r in id_rows]
        self.count = len(self._ids)
        self._hnsw, self._rows, self._queued = self._plan(
            os.path.join(root, segs[_VECTOR_SEGMENT]), vec_seq, queue, coll_id, schema)
        needs = int(((self._rows < 0) & (self._queued == 0)).sum())
        if needs and fallback_col is None:
            raise _Refused(f"{needs} vectors are neither in the HNSW files nor resolved from the queue, and no "
                           "fallback_col was given")
        self.fallback_count = needs
        self.queue_count = int((self._queued > 0).sum())

    def _plan(self, folder: str, vec_seq: int, queue: queue_mod.QueueIndex, coll_id: str, schema: str | None
              ) -> tuple[HnswSegment | None, np.ndarray, np.ndarray]:
        """(segment, per-ordinal file row or -1, per-ordinal queue seq_id or 0); neither = through chromadb."""
        conn, dim = self._conn, self._dim
        persisted = os.path.isfile(os.path.join(folder, PICKLE_FILE))
        if not persisted and vec_seq:
            raise _Refused("vector segment has a max_seq_id but no id map (chromadb fails too)")
        id_to_label = load_id_to_label(folder) if persisted else {}
        if persisted and not dim:
            raise _Refused("persisted HNSW segment but no collection dimension")
        space = None
        if dim:
            try:
                space = _space_agreed(conn, coll_id, os.path.basename(folder), schema)
            except _Refused:
                if id_to_label:
                    raise
        self._cosine = space == "cosine"
        # an empty id map is an uninitialised segment to chromadb: it replays every queue row of the collection
        changed: dict[str, int | None] = {}
        if space is not None:
            try:
                changed = queue_mod.replay(conn, queue.after(coll_id, vec_seq if id_to_label else 0), id_to_label,
                                           dim)
            except queue_mod.QueueRefused as exc:
                log.info("queue of collection %s not read directly (chromadb will): %s", coll_id, exc)
                changed = {i: None for i in queue_mod.ids_of(conn, queue.after(coll_id, vec_seq))}
        queued = np.fromiter((changed.get(i) or 0 for i in self._ids), dtype=np.int64, count=self.count)
        unread = np.full(self.count, -1, dtype=np.int64)
        if not id_to_label:
            return None, unread, queued
        seg = HnswSegment(folder, dim, normalized=self._cosine)
        labels = np.fromiter((-1 if i in changed else id_to_label.get(i, -1) for i in self._ids),
                             dtype=np.int64, count=self.count)
        rows = seg.rows_for(labels)
        lost = (labels >= 0) & (rows < 0)
        if lost.any():
            raise _Refused(f"{int(lost.sum())} mapped labels are missing or deleted in data_level0.bin")
        return seg, rows, queued

    def _metadata_rows(self, rowids: list[int]) -> Iterator[tuple[Any, ...]]:
        """embedding_metadata rows of the embeddings ``rowids`` (and maybe of others: filter them).

        The rows of a batch are usually stored together, so reading their table rowid range
        beats one index lookup per row; a scattered batch uses the index instead."""
        placeholders = ",".join("?" * len(rowids))
        lo, hi, n = self._conn.execute(
            "SELECT min(rowid), max(rowid), count(*) FROM embedding_metadata "
            f"WHERE id IN ({placeholders})", rowids).fetchone()
        cols = "SELECT id, key, string_value, int_value, float_value, bool_value FROM embedding_metadata"
        if not n:
            return iter(())
        if hi - lo < 2 * n:
            return self._conn.execute(f"{cols} WHERE rowid BETWEEN ? AND ?", (lo, hi))
        return self._conn.execute(f"{cols} WHERE id IN ({placeholders})", rowids)

    def _documents_metadata(self, rowids: list[int]
                            ) -> tuple[dict[int, str | None], dict[int, dict[str, Any]]]:
        """Documents and metadata of the embeddings rows ``rowids``, keyed by embeddings.id."""
        docs: dict[int, str | None] = {}
        metas: dict[int, dict[str, Any]] = {}
        for part in range(0, len(rowids), _SQL_VARS):
            ids = rowids[part:part + _SQL_VARS]
            wanted = set(ids)
            for rid, key, s, i, f, b in self._metadata_rows(ids):
                if rid not in wanted:
                    continue
                if key == _DOC_KEY:
                    if type(s) is not str and (s, i, f, b) != (None, None, None, None):
                        raise UnexpectedValue(f"document of row {rid} stored as {(s, i, f, b)!r}")
                    docs[rid] = s
                    continue
                # chromadb's precedence: string, int, float, bool; an all-NULL row is no value
                if s is not None:
                    value, ok = s, type(s) is str
                elif i is not None:
                    value, ok = i, type(i) is int
                elif f is not None:
                    value, ok = f, type(f) is float
                elif b is not None:
                    value, ok = b == 1, b in (0, 1) and type(b) is int
                else:
                    continue
                if not ok:
                    raise UnexpectedValue(f"metadata {key!r} of row {rid} stored as {(s, i, f, b)!r}")
                meta = metas.setdefault(rid, {})
                if not key.startswith("chroma:"):  # chromadb strips its reserved keys
                    meta[key] = value
        return docs, metas

    def _vectors(self, start: int, end: int) -> list[np.ndarray | None]:
        """Vectors of ordinals ``start`` .. ``end - 1``: from the files or the queue, else through chromadb."""
        rows, queued = self._rows[start:end], self._queued[start:end]
        out: list[np.ndarray | None] = [None] * (end - start)
        have = np.flatnonzero(rows >= 0)
        if have.size and self._hnsw is not None:
            for k, vec in zip(have.tolist(), self._hnsw.vectors(rows[have])):
                out[k] = vec
        in_queue = np.flatnonzero(queued > 0)
        if in_queue.size:
            vecs = queue_mod.vectors(self._conn, queued[in_queue].tolist(), self._dim, cosine=self._cosine)
            for k, vec in zip(in_queue.tolist(), vecs):
                out[k] = vec
        need = np.flatnonzero((rows < 0) & (queued == 0)).tolist()
        if need:
            found = _vectors_by_id(self._fallback, [self._ids[start + k] for k in need])
            for k in need:
                out[k] = found.get(self._ids[start + k])
        return out

    def iter_batches(self, batch_size: int = 1000, start: int = 0) -> Iterator[Batch]:
        """Yield the chunks from ordinal ``start`` in batches of ``batch_size`` (see module doc)."""
        if batch_size < 1 or start < 0:
            raise ValueError("batch_size must be >= 1 and start >= 0")
        for offset in range(start, self.count, batch_size):
            end = min(offset + batch_size, self.count)
            rowids = self._rowids[offset:end].tolist()
            with self._lock:
                docs, metas = self._documents_metadata(rowids)
                vectors = self._vectors(offset, end)
            yield Batch(start=offset, chunks=[
                Chunk(id=self._ids[offset + k], embedding=vectors[k], document=docs.get(rid),
                      metadata=metas.get(rid)) for k, rid in enumerate(rowids)])
