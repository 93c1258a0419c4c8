"""Write HridaAI's pgvector table ``document_chunk`` exactly as its pgvector client makes it.

Mirrors ``open_webui/retrieval/vector/dbs/pgvector.py`` (0.12.4, hridaai-data-layer.md §5):
unqualified table name (it lands in the connection's search_path, as the app's does), fixed
index names, vectors zero-padded to the table dimension, cosine opclasses.  The vector index
is built after the load, because building it first makes every COPY row pay for it and an
ivfflat index trained on an empty table is useless.
"""

from __future__ import annotations

import logging
import re
import struct
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from migrator import pgread
from migrator.errors import PreflightError

log = logging.getLogger(__name__)

TABLE = "document_chunk"
COLUMNS = ("id", "vector", "collection_name", "text", "vmetadata")
VECTOR_INDEX = "idx_document_chunk_vector"
COLLECTION_INDEX = "idx_document_chunk_collection_name"
TEXT_INDEX = "idx_document_chunk_text_search"
MAX_INDEXED_VECTOR_DIM = 2000  # pgvector cannot index vector(N) above this; HridaAI refuses it
HALFVEC_MIN_VERSION = (0, 7, 0)

_registered: "weakref.WeakSet[Any]" = weakref.WeakSet()
_versions: "weakref.WeakKeyDictionary[Any, str | None]" = weakref.WeakKeyDictionary()  # conn -> pgvector version


@dataclass(frozen=True)
class VectorTableSpec:
    """Shape of ``document_chunk`` (PGVECTOR_INITIALIZE_MAX_VECTOR_LENGTH, PGVECTOR_USE_HALFVEC, …)."""

    dimension: int = 1536
    halfvec: bool = False
    index_method: str = ""  # '' -> ivfflat, or hnsw with halfvec (HridaAI's default)
    hnsw_m: int = 16
    hnsw_ef_construction: int = 64
    ivfflat_lists: int = 100

    def __post_init__(self) -> None:
        if self.dimension < 1:
            raise ValueError("dimension must be >= 1")
        if self.index_method not in ("", "ivfflat", "hnsw"):
            raise ValueError(f"index_method {self.index_method!r}: use '', 'ivfflat' or 'hnsw'")
        if self.dimension > MAX_INDEXED_VECTOR_DIM and not self.halfvec:
            raise ValueError(
                f"dimension {self.dimension} > {MAX_INDEXED_VECTOR_DIM} needs halfvec: "
                "set PGVECTOR_USE_HALFVEC=true (HridaAI refuses this combination too)"
            )

    @property
    def method(self) -> str:
        """The index access method actually used: 'ivfflat' or 'hnsw'."""
        return self.index_method or ("hnsw" if self.halfvec else "ivfflat")

    @property
    def type_name(self) -> str:
        """'vector' or 'halfvec'."""
        return "halfvec" if self.halfvec else "vector"

    @property
    def column_type(self) -> str:
        """SQL type of the vector column, e.g. ``vector(1536)``."""
        return f"{self.type_name}({self.dimension})"

    @property
    def opclass(self) -> str:
        """Cosine operator class matching the column type."""
        return f"{self.type_name}_cosine_ops"


@dataclass(frozen=True)
class IndexResult:
    """Outcome of build_vector_index."""

    name: str
    method: str
    created: bool
    detail: str


# --- vectors ------------------------------------------------------------------------------


NOT_FINITE = "vector holds NaN or infinity, which pgvector rejects"
HALFVEC_RANGE = "vector value exceeds halfvec range (|x| > 65504)"


def too_long(length: int, dimension: int) -> str:
    """Why a vector longer than the table's dimension is refused (HridaAI would silently truncate it)."""
    return (f"vector has {length} dimensions, table has {dimension}: set PGVECTOR_INITIALIZE_MAX_VECTOR_LENGTH to "
            f"at least {length}")


def pad(embedding: Any, dimension: int) -> np.ndarray:
    """Zero-pad ``embedding`` to ``dimension`` as float32, like HridaAI's adjust_vector_length.

    Raises ValueError if it is longer (HridaAI would silently truncate and corrupt it) or holds
    NaN/infinity (pgvector rejects those).
    """
    vec = np.asarray(embedding, dtype=np.float32).reshape(-1)
    if vec.shape[0] > dimension:
        raise ValueError(too_long(vec.shape[0], dimension))
    if not np.isfinite(vec).all():
        raise ValueError(NOT_FINITE)
    if vec.shape[0] == dimension:
        return vec
    out = np.zeros(dimension, dtype=np.float32)
    out[: vec.shape[0]] = vec
    return out


# --- DDL ----------------------------------------------------------------------------------

_ENSURE_EXTENSION = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') THEN
        CREATE EXTENSION IF NOT EXISTS vector;
    END IF;
END $$;
"""


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


async def ensure_extension(conn: Any) -> str:
    """Create the ``vector`` extension only if it is missing (HridaAI's DO block); return its version."""
    await conn.execute(_ENSURE_EXTENSION)
    return await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")


async def _require_type(conn: Any, spec: VectorTableSpec) -> None:
    if not spec.halfvec:
        return
    version = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    if version is None or version_tuple(version) < HALFVEC_MIN_VERSION:
        raise PreflightError(
            "halfvec needs pgvector >= 0.7.0",
            detail=f"the server's vector extension is {version or 'not installed'}",
            hint="install pgvector >= 0.7.0 and run ALTER EXTENSION vector UPDATE, "
            "or unset PGVECTOR_USE_HALFVEC",
        )


async def create_table(conn: Any, spec: VectorTableSpec, *, with_indexes: bool = True) -> None:
    """Create ``document_chunk`` with its collection_name and text-search indexes, if absent.

    The vector index is left to build_vector_index.  An existing table must match ``spec``.
    """
    await _require_type(conn, spec)
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {TABLE} ("
        "id TEXT PRIMARY KEY, "
        f"vector {spec.column_type}, "
        "collection_name TEXT NOT NULL, "
        "text TEXT, "
        "vmetadata JSONB)"
    )
    found = await existing_table(conn)
    if found is None or (found["type"], found["dimension"]) != (spec.type_name, spec.dimension):
        raise PreflightError(
            f"{TABLE} exists with another vector column than {spec.column_type}",
            detail=f"{TABLE}.vector is {found and found['type']}({found and found['dimension']})",
            hint="set PGVECTOR_INITIALIZE_MAX_VECTOR_LENGTH / PGVECTOR_USE_HALFVEC to match the "
            "existing table, or drop it",
        )
    if with_indexes:
        await create_secondary_indexes(conn)


async def create_secondary_indexes(conn: Any) -> None:
    """The collection_name btree and the text-search GIN index, with HridaAI's names (idempotent)."""
    await conn.execute(
        f"CREATE INDEX IF NOT EXISTS {COLLECTION_INDEX} ON {TABLE} (collection_name)"
    )
    await conn.execute(
        f"CREATE INDEX IF NOT EXISTS {TEXT_INDEX} ON {TABLE} "
        "USING gin (to_tsvector('simple', coalesce(text, '')))"
    )


async def analyze(conn: Any) -> None:
    """ANALYZE document_chunk's columns but the vector: no query plan uses a vector column's statistics, and
    detoasting every sampled vector is most of a full ANALYZE's time (autovacuum analyzes the whole table later)."""
    await conn.execute(f"ANALYZE {TABLE} (id, collection_name, text, vmetadata)")


async def existing_table(conn: Any) -> dict[str, Any] | None:
    """Describe an existing ``document_chunk`` in the search_path, or return None.

    Keys: ``type`` ('vector'|'halfvec'|other), ``dimension`` (int|None), ``rows`` (estimate
    from pg_class), ``vector_index`` (access method of idx_document_chunk_vector, or None).
    """
    row = await conn.fetchrow(
        """
        SELECT t.typname AS type, a.atttypmod AS typmod, c.reltuples AS reltuples
        FROM pg_class c
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'vector' AND NOT a.attisdropped
        JOIN pg_type t ON t.oid = a.atttypid
        WHERE c.oid = to_regclass($1)
        """,
        TABLE,
    )
    if row is None:
        return None
    return {
        "type": row["type"],
        "dimension": row["typmod"] if row["typmod"] > 0 else None,
        "rows": max(int(row["reltuples"]), 0),
        "vector_index": await _index_method(conn),
    }


async def table_indexes(conn: Any) -> dict[str, dict[str, str]]:
    """Every index on ``document_chunk``: name -> {"method": access method, "definition": pg_get_indexdef}."""
    rows = await conn.fetch(
        """
        SELECT ic.relname AS name, am.amname AS method, pg_get_indexdef(i.indexrelid) AS definition
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_am am ON am.oid = ic.relam
        WHERE i.indrelid = to_regclass($1) AND NOT i.indisprimary
        ORDER BY 1
        """,
        TABLE,
    )
    return {r["name"]: {"method": r["method"], "definition": r["definition"]} for r in rows}


ITERATIVE_SCAN_MIN_VERSION = (0, 8, 0)


def vector_literal(query: np.ndarray, dimension: int) -> str:
    """The query vector zero-padded to the column's length as pgvector's text form, as HridaAI sends it."""
    return "[" + ",".join(map(repr, pad(query, dimension).tolist())) + "]"  # tolist: Python floats, as float(x)


async def search_as_hridaai(conn: Any, spec: VectorTableSpec, collection: str, query: np.ndarray, k: int, *,
                            session: dict[str, str] | None = None) -> list[tuple[str, float]]:
    """One search exactly as HridaAI's pgvector client (0.11.4+) issues it: in a transaction, `SET LOCAL
    <method>.iterative_scan = relaxed_order` when the extension is >= 0.8, then the zero-padded query vector as a
    VALUES row cast to vector(N) (halfvec(N)), a LATERAL subquery per query vector ordered by `<=>`, LIMIT k. The
    planner picks its plan for this shape, which may not be the plan of a plain `ORDER BY ... LIMIT`."""
    literal = vector_literal(query, spec.dimension)
    if conn not in _versions:  # asked once per connection: a search's measured latency is the search alone
        _versions[conn] = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    version = _versions[conn]
    async with pgread.block(conn):
        if version and version_tuple(version) >= ITERATIVE_SCAN_MIN_VERSION:
            await conn.execute(f"SET LOCAL {spec.method}.iterative_scan = relaxed_order")
        for name, value in (session or {}).items():  # what a database default would give HridaAI's sessions
            await conn.execute("SELECT set_config($1, $2, true)", name, value)
        rows = await conn.fetch(
            f"SELECT r.id, r.distance FROM (VALUES (0, CAST($1::text AS {spec.column_type}))) AS q (qid, q_vector) "
            f"JOIN LATERAL (SELECT id, vector <=> q.q_vector AS distance FROM {TABLE} "
            "WHERE collection_name = $2 ORDER BY vector <=> q.q_vector LIMIT $3) AS r ON true "
            "ORDER BY q.qid, r.distance", literal, collection, k)
    return [(r["id"], r["distance"]) for r in rows]


async def search_setup(conn: Any) -> dict[str, Any]:
    """What decides the quality of HridaAI's searches here: the vector index, pgvector's version, and the probes /
    ef_search the database's sessions start with."""
    index = (await table_indexes(conn)).get(VECTOR_INDEX)
    await conn.execute("SELECT '[1]'::vector")  # loads the library: its settings exist from now on
    return {"index": index["definition"] if index else None, "method": index["method"] if index else None,
            "pgvector": await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'"),
            "ivfflat.probes": await conn.fetchval("SELECT current_setting('ivfflat.probes', true)"),
            "hnsw.ef_search": await conn.fetchval("SELECT current_setting('hnsw.ef_search', true)")}


async def rebuild_vector_index(conn: Any) -> None:
    """REINDEX idx_document_chunk_vector: the same name and definition (HridaAI's startup check accepts it), its
    ivfflat lists trained again on the rows the table holds now."""
    await conn.execute(f"REINDEX INDEX {VECTOR_INDEX}")


async def _index_method(conn: Any) -> str | None:
    return await conn.fetchval(
        """
        SELECT am.amname
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_am am ON am.oid = ic.relam
        WHERE i.indrelid = to_regclass($1) AND ic.relname = $2
        """,
        TABLE,
        VECTOR_INDEX,
    )


def _index_ddl(spec: VectorTableSpec) -> str:
    if spec.method == "hnsw":
        params = f"m = {spec.hnsw_m}, ef_construction = {spec.hnsw_ef_construction}"
    else:
        params = f"lists = {spec.ivfflat_lists}"
    return (
        f"CREATE INDEX IF NOT EXISTS {VECTOR_INDEX} ON {TABLE} "
        f"USING {spec.method} (vector {spec.opclass}) WITH ({params})"
    )


async def build_vector_index(conn: Any, spec: VectorTableSpec, *, min_rows: int = 1) -> IndexResult:
    """Build ``idx_document_chunk_vector`` after the load, as HridaAI names and configures it.

    ivfflat is skipped (created=False, with the reason) while the table has fewer than
    ``min_rows`` rows (at least 1: an index trained on nothing is useless).  Pass
    ``min_rows=50 * spec.ivfflat_lists`` to follow HridaAI >= 0.11.4, which then builds it
    itself at startup once the table is big enough.  An existing index with another method
    raises, because HridaAI refuses to start with it.
    """
    current = await _index_method(conn)
    if current is not None:
        if current != spec.method:
            raise PreflightError(
                f"{VECTOR_INDEX} exists as {current}, not {spec.method}; HridaAI would refuse to start",
                hint=f"DROP INDEX {VECTOR_INDEX}, or set PGVECTOR_INDEX_METHOD={current}",
            )
        return IndexResult(VECTOR_INDEX, spec.method, False, "already exists")
    if spec.method == "ivfflat":
        rows = await conn.fetchval(f"SELECT count(*) FROM {TABLE}")
        if rows < max(min_rows, 1):
            detail = (f"skipped: {rows} rows < {max(min_rows, 1)}; HridaAI builds it at startup "
                      "once the table is big enough")
            log.info("%s %s", VECTOR_INDEX, detail)
            return IndexResult(VECTOR_INDEX, spec.method, False, detail)
    await conn.execute(_index_ddl(spec))
    return IndexResult(VECTOR_INDEX, spec.method, True, _index_ddl(spec))


# --- data -----------------------------------------------------------------------------------


async def register(conn: Any) -> None:
    from pgvector.asyncpg import register_vector

    if conn not in _registered:
        await register_vector(conn)
        _registered.add(conn)


async def register_encoded(conn: Any) -> None:
    """Make `conn` take vector/halfvec values already in pgvector's binary form (see encode_vectors)."""
    for name in ("vector", "halfvec"):
        try:
            await conn.set_type_codec(name, schema="public", encoder=bytes, decoder=bytes, format="binary")
        except ValueError as exc:  # halfvec: pgvector < 0.7
            if not str(exc).startswith("unknown type"):
                raise


def encode_vectors(embeddings: Sequence[np.ndarray], spec: VectorTableSpec) -> list[bytes | str]:
    """pgvector binary values of a batch, zero-padded to the table dimension like pad(), in one numpy pass per
    vector length; in place of a vector that cannot be stored, the reason (a str, worded as pad() words it)."""
    out: list[bytes | str] = [""] * len(embeddings)
    by_length: dict[int, list[int]] = {}
    for i, emb in enumerate(embeddings):
        by_length.setdefault(int(emb.shape[0]), []).append(i)
    dim, dtype, width = spec.dimension, (">f2" if spec.halfvec else ">f4"), (2 if spec.halfvec else 4)
    head = np.frombuffer(struct.pack(">HH", dim, 0), dtype=np.uint8)
    for length, rows in by_length.items():
        if length > dim:
            for i in rows:
                out[i] = too_long(length, dim)
            continue
        src = np.stack([np.asarray(embeddings[i], dtype=np.float32).reshape(-1) for i in rows])
        finite = np.isfinite(src).all(axis=1)
        with np.errstate(over="ignore"):
            values = src.astype(dtype)
        fits = np.isfinite(values).all(axis=1)
        buf = np.zeros((len(rows), 4 + width * dim), dtype=np.uint8)
        buf[:, :4] = head
        buf[:, 4:4 + width * length] = values.view(np.uint8).reshape(len(rows), width * length)
        for k, i in enumerate(rows):
            if not finite[k]:
                out[i] = NOT_FINITE
            elif not fits[k]:
                out[i] = HALFVEC_RANGE
            else:
                out[i] = buf[k].tobytes()
    return out


async def copy_encoded(conn: Any, records: list[tuple]) -> None:
    """COPY records of (id, encoded vector, collection_name, text, vmetadata) made with encode_vectors (text and
    vmetadata as migrator.convert.vectors makes them), through a connection set up with register_encoded."""
    if records:
        await conn.copy_records_to_table(TABLE, records=records, columns=list(COLUMNS))


async def copy_chunks(conn: Any, rows: Iterable[Sequence[Any]], *, spec: VectorTableSpec) -> int:
    """COPY ``rows`` of (id, vector, collection_name, text, vmetadata_json) into the table, the way the load does
    (encode_vectors: zero-padded to the table dimension, pgvector's binary form; copy_encoded); return the rows
    written. Text and metadata go as given (convert them with migrator.convert.vectors first: PostgreSQL refuses
    a NUL). ValueError (pad()'s words) for a vector that cannot be stored. Run it inside the caller's transaction
    to make a batch and its ledger row atomic; `conn` keeps the bytes codec for vector/halfvec afterwards
    (register_vector to read them as vectors)."""
    rows = [tuple(r) for r in rows]
    encoded = iter(encode_vectors([np.asarray(r[1], dtype=np.float32).reshape(-1) for r in rows
                                   if r[1] is not None], spec))
    records = []
    for chunk_id, vec, collection_name, text, vmetadata in rows:
        value = None if vec is None else next(encoded)
        if isinstance(value, str):
            raise ValueError(f"chunk {chunk_id}: {value}")
        records.append((chunk_id, value, collection_name, text, vmetadata))
    await register_encoded(conn)
    await copy_encoded(conn, records)
    return len(records)
