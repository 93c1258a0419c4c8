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


class Refused(Exception):
    """The store cannot be described without chromadb (the message says why)."""


def describe(store: DirectStore) -> list[CollectionInfo] | None:
    """Every collection of the default database, sorted by name; None (reason logged) if refused."""
    try:
        return [_info(store.conn, *row) for row in store.conn.execute(_COLLECTIONS).fetchall()]
    except (Refused, sqlite3.Error) as exc:
        log.info("describing the Chroma store from its files refused: %s", exc)
        return None


def ids(store: DirectStore, collection_id: str) -> list[str]:
    """The chunk ids of a collection in chromadb's `get` order (ascending embeddings.id)."""
    return [r[0] for r in store.conn.execute(
        "SELECT embedding_id FROM embeddings WHERE segment_id = ? ORDER BY id", (_segment(store.conn, collection_id),))]


def _segment(conn: sqlite3.Connection, collection_id: str) -> str:
    rows = conn.execute("SELECT id FROM segments WHERE collection = ? AND type = ?",
                        (collection_id, _METADATA_SEGMENT)).fetchall()
    if len(rows) != 1:
        raise Refused(f"collection {collection_id}: {len(rows)} metadata segments")
    return rows[0][0]


def _info(conn: sqlite3.Connection, collection_id: str, name: str, dimension: int | None) -> CollectionInfo:
    segment = _segment(conn, collection_id)
    applied = conn.execute("SELECT seq_id FROM max_seq_id WHERE segment_id = ?", (segment,)).fetchone()
    queued = conn.execute("SELECT max(seq_id) FROM embeddings_queue WHERE topic GLOB ('persistent://*/*/' || ?)",
                          (collection_id,)).fetchone()[0]
    if (queued or 0) > (applied[0] if applied else 0):
        raise Refused(f"collection {name}: its metadata segment is behind embeddings_queue")
    count = conn.execute("SELECT count(*) FROM embeddings WHERE segment_id = ?", (segment,)).fetchone()[0]
    first = [r[0] for r in conn.execute("SELECT id FROM embeddings WHERE segment_id = ? ORDER BY id LIMIT ?",
                                        (segment, _PEEK))]
    keys = sorted({r[0] for r in conn.execute(
        f"SELECT DISTINCT key FROM embedding_metadata WHERE id IN ({','.join('?' * len(first))}) "
        "AND key NOT GLOB 'chroma:*' AND coalesce(string_value, int_value, float_value, bool_value) IS NOT NULL",
        first)}) if first else []
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
