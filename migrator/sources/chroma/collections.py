"""What a Chroma store holds, read from its chroma.sqlite3 (no chromadb, no copy, no HNSW loaded): the collections
as `chroma.describe_client(scan=False)` describes them, and their chunk ids in `get` order.

Used by `run` and `verify` (whose plan does not scan vectors) when chroma_direct knows the store. A collection
whose metadata segment has not applied every queued write would count differently through chromadb: then the
whole description is refused (None) and the caller asks chromadb.
"""

from __future__ import annotations

import logging
import sqlite3

from migrator.sources.chroma.client import DEFAULT_SPACE, SPACES, CollectionInfo
from migrator.sources.chroma.direct import _METADATA_SEGMENT, DirectStore

log = logging.getLogger(__name__)

_PEEK = 1000  # metadata keys come from the first page, as describe_client(scan=False) takes them
_COLLECTIONS = """
SELECT c.id, c.name, c.dimension FROM collections c JOIN databases d ON d.id = c.database_id
WHERE d.name = 'default_database' AND d.tenant_id = 'default_tenant' ORDER BY c.name"""


_KEY_FILTER = ("m.key NOT GLOB 'chroma:*' "
               "AND coalesce(m.string_value, m.int_value, m.float_value, m.bool_value) IS NOT NULL")


def collisions(store: DirectStore, infos: list[CollectionInfo]) -> dict[str, dict[str, str]]:
    """collection -> {chunk id -> the first collection (by name) holding it}, for the chunk ids that several of
    `infos` hold (document_chunk.id is global): one GROUP BY over every metadata segment, no id list in memory."""
    names = {i.id: i.name for i in infos}
    held: dict[str, list[str]] = {}
    with store.lock:
        for chunk_id, collection_id in store.conn.execute(
                "SELECT e.embedding_id, s.collection FROM embeddings e JOIN segments s ON s.id = e.segment_id "
                "WHERE e.embedding_id IN (SELECT embedding_id FROM embeddings GROUP BY embedding_id "
                "HAVING count(*) > 1)"):
            if collection_id in names:
                held.setdefault(chunk_id, []).append(names[collection_id])
    out: dict[str, dict[str, str]] = {}
    for chunk_id, holders in held.items():
        first, *later = sorted(holders)
        for name in later:
            out.setdefault(name, {})[chunk_id] = first
    return out


class Refused(Exception):
    """The store cannot be described without chromadb (the message says why)."""


def describe(store: DirectStore, *, scan: bool = False) -> list[CollectionInfo] | None:
    """Every collection of the default database, sorted by name; None (reason logged) if refused.

    scan=False: metadata keys of the first page, as describe_client(scan=False); scan=True: of every chunk, and the
    dimension only where the collection holds chunks, as describe_client(scan=True) (whose other finding, vectors
    the store lost, the caller takes from the readers)."""
    try:
        with store.lock:
            return [_info(store, *row, scan=scan) for row in store.conn.execute(_COLLECTIONS).fetchall()]
    except (Refused, sqlite3.Error) as exc:
        log.info("describing the Chroma store from its files refused: %s", exc)
        return None


def ids(store: DirectStore, collection_id: str) -> list[str]:
    """The chunk ids of a collection in chromadb's `get` order (ascending embeddings.id)."""
    with store.lock:
        return [r[0] for r in store.conn.execute(
            "SELECT embedding_id FROM embeddings WHERE segment_id = ? ORDER BY id",
            (_segment(store.conn, collection_id),))]


def _segment(conn: sqlite3.Connection, collection_id: str) -> str:
    rows = conn.execute("SELECT id FROM segments WHERE collection = ? AND type = ?",
                        (collection_id, _METADATA_SEGMENT)).fetchall()
    if len(rows) != 1:
        raise Refused(f"collection {collection_id}: {len(rows)} metadata segments")
    return rows[0][0]


def _info(store: DirectStore, collection_id: str, name: str, dimension: int | None, *, scan: bool
          ) -> CollectionInfo:
    conn = store.conn
    segment = _segment(conn, collection_id)
    applied = conn.execute("SELECT seq_id FROM max_seq_id WHERE segment_id = ?", (segment,)).fetchone()
    if store.queue.last(collection_id) > (applied[0] if applied else 0):
        raise Refused(f"collection {name}: its metadata segment is behind embeddings_queue")
    count = conn.execute("SELECT count(*) FROM embeddings WHERE segment_id = ?", (segment,)).fetchone()[0]
    if scan:
        keys = sorted({r[0] for r in conn.execute(
            "SELECT DISTINCT m.key FROM embeddings e JOIN embedding_metadata m ON m.id = e.id WHERE e.segment_id = ? "
            f"AND {_KEY_FILTER}", (segment,))})
        dimension = dimension if count else None
    else:
        first = [r[0] for r in conn.execute("SELECT id FROM embeddings WHERE segment_id = ? ORDER BY id LIMIT ?",
                                            (segment, _PEEK))]
        keys = sorted({r[0] for r in conn.execute(
            f"SELECT DISTINCT key FROM embedding_metadata m WHERE id IN ({','.join('?' * len(first))}) "
            f"AND {_KEY_FILTER}", first)}) if first else []
    return CollectionInfo(name=name, id=collection_id, count=count, dimension=dimension,
                          space=_space_in_catalog(conn, collection_id, name), metadata_keys=keys, missing_vectors=0)


def _space_in_catalog(conn: sqlite3.Connection, collection_id: str, name: str) -> str:
    """hnsw:space of the collection's metadata, as client._space_of_metadata reads it."""
    row = conn.execute("SELECT str_value, int_value, float_value, bool_value FROM collection_metadata "
                       "WHERE collection_id = ? AND key = 'hnsw:space'", (collection_id,)).fetchone()
    if row is None:
        return DEFAULT_SPACE
    if row[0] not in SPACES or any(v is not None for v in row[1:]):
        raise Refused(f"collection {name}: hnsw:space {row!r}")
    return row[0]


def segment_ids(store: DirectStore, names: list[str]) -> list[str]:
    """The segment ids (a vector segment's files are in the folder of that name) of the collections `names`."""
    with store.lock:
        return [r[0] for r in store.conn.execute(
            f"SELECT s.id FROM segments s JOIN collections c ON c.id = s.collection "
            f"WHERE c.name IN ({','.join('?' * len(names))})", names)] if names else []


def versions(store: DirectStore) -> dict[str, tuple[str, int]]:
    """Collection name -> (collection id, its metadata segment's max_seq_id): chromadb moves that seq_id with every
    write it applies to the collection (add, update, upsert, delete), and a collection deleted then made again gets
    a new id, so two snapshots agree on this pair exactly when the collection was not written in between."""
    with store.lock:
        rows = store.conn.execute(
            "SELECT c.name, c.id, coalesce(m.seq_id, 0) FROM collections c JOIN databases d ON d.id = c.database_id "
            "JOIN segments s ON s.collection = c.id AND s.type = ? LEFT JOIN max_seq_id m ON m.segment_id = s.id "
            "WHERE d.name = 'default_database' AND d.tenant_id = 'default_tenant'", (_METADATA_SEGMENT,)).fetchall()
    return {name: (cid, int(seq)) for name, cid, seq in rows}
