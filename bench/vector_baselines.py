"""Reference measurements for the vector path, on the same store and the same PostgreSQL as ``migrate``.

* chroma_read : chromadb ``collection.get(include=[embeddings, documents, metadatas], limit=PAGE, offset=k)`` over
                every collection (PAGE = migrate's vector batch, 1000) — what reading the source costs at best
                through chromadb. The pages of the last run are kept to build the ceiling's rows.
* ceiling     : those rows prepared in memory as migrate would send them (id, ``pgvector.Vector`` of the vector
                zero-padded to the table dimension, collection name, text, vmetadata JSON text), loaded with asyncpg
                ``copy_records_to_table`` (pgvector's binary codec) in batches of PAGE rows pulled from one queue by
                ``connections`` connections (synchronous_commit off, like migrate's bulk sessions) into an empty
                ``document_chunk`` made by migrate's own ``create_table`` (PK, collection_name btree, text GIN; no
                vector index). Reading Chroma is not timed.
* ceiling_real: the real profile's ceiling: the same chunks straight from the generator (prepare_generated), raw
                COPY in batches of PAGE rows spanning collections into a primary-key-only ``document_chunk``, then
                the indexes the table needs (collection_name btree and text GIN at once, then the vector index as
                migrate builds it), all timed.
"""
from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import asyncpg
import numpy as np

from bench import pgutil

PAGE = 1000  # = migrator.vectors_load.BATCH


def open_client(store: Path):
    """A chromadb PersistentClient on ``store`` (a scratch copy: chromadb may rewrite what it opens)."""
    import chromadb
    from chromadb.config import Settings

    return chromadb.PersistentClient(path=str(store), settings=Settings(anonymized_telemetry=False,
                                                                        allow_reset=False))


def read_all(client, page: int = PAGE, keep: bool = False) -> tuple[float, int, list]:
    """Page through every collection (sorted by name) with get(include=all); return (seconds, vectors, pages).

    ``pages`` holds (collection name, get() result) when ``keep`` is set, else it is empty.
    """
    names = sorted(c if isinstance(c, str) else c.name for c in client.list_collections())
    pages: list = []
    n = 0
    t0 = time.perf_counter()
    for name in names:
        col = client.get_collection(name=name, embedding_function=None)
        total = col.count()
        for offset in range(0, total, page):
            got = col.get(include=["embeddings", "documents", "metadatas"], limit=min(page, total - offset),
                          offset=offset)
            n += len(got["ids"])
            if keep:
                pages.append((name, got))
    return time.perf_counter() - t0, n, pages


def chroma_read(store: Path, runs: int, log=print, keep: bool = True) -> tuple[dict, list]:
    """Median vectors/s of ``runs`` full reads; also returns the pages of the last one (``keep``; else [])."""
    client = open_client(store)
    times, pages, n = [], [], 0
    for i in range(runs):
        secs, n, pages = read_all(client, keep=keep and i == runs - 1)
        times.append(secs)
        log(f"  chromadb read {i + 1}/{runs}: {n:,} vectors in {secs:.1f} s ({n / secs:,.0f}/s)")
    med = statistics.median(times)
    return {"vectors": n, "runs_s": [round(t, 3) for t in times], "seconds": med, "page": PAGE,
            "vectors_per_s": n / med if med else None}, pages


def prepare_records(pages: list, dimension: int) -> tuple[list[list[tuple]], int]:
    """Batches of COPY records as migrate builds them (padded float32 Vector, vmetadata as JSON text)."""
    from pgvector import Vector

    from migrator.convert import vectors as chunk_values
    from migrator.convert.policies import Context

    batches, n = [], 0
    for name, got in pages:
        batch = []
        for cid, emb, doc, meta in zip(got["ids"], got["embeddings"], got["documents"], got["metadatas"]):
            vec = np.zeros(dimension, dtype=np.float32)
            e = np.asarray(emb, dtype=np.float32)
            vec[: e.shape[0]] = e
            batch.append((cid, Vector(vec), name, doc, chunk_values.vmetadata(meta, Context(chunk_values.KEEP))))
        n += len(batch)
        batches.append(batch)
    return batches, n


async def _connect(dsn: str, lz4: bool):
    from pgvector.asyncpg import register_vector

    con = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "off"})
    if lz4:
        await con.execute("SET default_toast_compression = lz4")
    await register_vector(con)
    return con


async def reset_table(dsn: str, dimension: int, indexes: bool) -> None:
    """Empty ``document_chunk`` with migrate's DDL; ``indexes=False`` keeps only the primary key."""
    from migrator.targets import pgvector as pgv

    con = await asyncpg.connect(dsn)
    try:
        await con.execute("DROP TABLE IF EXISTS document_chunk")
        await pgv.ensure_extension(con)
        await pgv.create_table(con, pgv.VectorTableSpec(dimension=dimension))
        if not indexes:
            await con.execute(f"DROP INDEX {pgv.COLLECTION_INDEX}")
            await con.execute(f"DROP INDEX {pgv.TEXT_INDEX}")
        await con.execute("CHECKPOINT")  # start every load from the same WAL/dirty-buffer state
    finally:
        await con.close()


async def copy_once(dsn: str, batches: list, connections: int, dimension: int, lz4: bool,
                    indexes: bool = True) -> float:
    """Load ``batches`` into a fresh ``document_chunk`` with ``connections`` COPY connections; return seconds."""
    from migrator.targets import pgvector as pgv

    await reset_table(dsn, dimension, indexes)
    cons = [await _connect(dsn, lz4) for _ in range(connections)]
    try:
        t0 = time.perf_counter()
        await pgutil.copy_batches(cons, pgv.TABLE, list(pgv.COLUMNS), batches)
        return time.perf_counter() - t0
    finally:
        for c in cons:
            await c.close()


async def ceiling(dsn: str, batches: list, n: int, *, runs: int, connections: int, dimension: int, lz4: bool,
                  indexes: bool = True, log=print, label: str = "ceiling") -> dict:
    """Median of ``runs`` COPY loads of the prepared batches."""
    times = []
    for i in range(runs):
        secs = await copy_once(dsn, batches, connections, dimension, lz4, indexes)
        times.append(secs)
        log(f"  {label} {i + 1}/{runs}: {n:,} rows in {secs:.1f} s ({n / secs:,.0f}/s)")
    med = statistics.median(times)
    return {"rows": n, "runs_s": [round(t, 3) for t in times], "seconds": med, "connections": connections,
            "secondary_indexes": indexes, "batch_rows": PAGE, "vectors_per_s": n / med if med else None}


# --- the real profile's ceiling: raw COPY of the same chunks + the index builds document_chunk needs ------------------


def prepare_generated(p, dimension: int, page: int = PAGE) -> tuple[list[list[tuple]], int, int]:
    """The real profile's chunks straight from the generator (what its store holds: a memory's upsert is its final
    state), as migrate sends them: (id, pgvector binary of the vector zero-padded to ``dimension``, collection, text,
    vmetadata JSON text), in batches of ``page`` rows that span collections (one COPY per batch, whatever the
    collection). Returns (batches, rows, collections)."""
    from bench import vector_data
    from migrator.convert import vectors as chunk_values
    from migrator.convert.policies import Context
    from migrator.targets import pgvector as pgv

    plan = vector_data.plan_real(p)
    spec = pgv.VectorTableSpec(dimension=dimension)
    ctx = Context(chunk_values.KEEP)
    batches: list[list[tuple]] = []
    cur: list[tuple] = []
    n = 0
    for _op, name, (ids, vecs, docs, metas) in vector_data.iter_real_items(p, plan):
        encoded = pgv.encode_vectors(list(vecs), spec)
        for cid, vec, doc, meta in zip(ids, encoded, docs, metas):
            cur.append((cid, vec, name, doc, chunk_values.vmetadata(meta, ctx)))
            if len(cur) == page:
                batches.append(cur)
                cur = []
        n += len(ids)
    if cur:
        batches.append(cur)
    return batches, n, len(plan.collections)


async def _connect_encoded(dsn: str, lz4: bool):
    from migrator.targets import pgvector as pgv

    con = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "off"})
    if lz4:
        await con.execute("SET default_toast_compression = lz4")
    await pgv.register_encoded(con)
    return con


async def _index(dsn: str, sql: str) -> float:
    """One index build on its own connection (maintenance_work_mem as migrate's vector finalize sets it)."""
    con = await asyncpg.connect(dsn)
    try:
        await con.execute("SET maintenance_work_mem = '512MB'")
        t0 = time.perf_counter()
        await con.execute(sql)
        return time.perf_counter() - t0
    finally:
        await con.close()


async def copy_and_index_once(dsn: str, batches: list, connections: int, dimension: int, lz4: bool) -> dict:
    """Raw COPY of ``batches`` into an empty primary-key-only ``document_chunk`` over ``connections`` connections,
    then its required indexes: the collection_name btree and the text-search GIN at once on two connections (one
    after the other with one), then the vector index as migrate and HridaAI build it (ivfflat lists = 100 from
    5,000 rows: below, none). Seconds of each step and in all."""
    from migrator.targets import pgvector as pgv

    await reset_table(dsn, dimension, indexes=False)
    cons = [await _connect_encoded(dsn, lz4) for _ in range(connections)]
    try:
        t0 = time.perf_counter()
        await pgutil.copy_batches(cons, pgv.TABLE, list(pgv.COLUMNS), batches)
        t_copy = time.perf_counter()
    finally:
        for c in cons:
            await c.close()
    secondary = [f"CREATE INDEX {pgv.COLLECTION_INDEX} ON {pgv.TABLE} (collection_name)",
                 f"CREATE INDEX {pgv.TEXT_INDEX} ON {pgv.TABLE} USING gin (to_tsvector('simple', coalesce(text, '')))"]
    if connections > 1:
        await asyncio.gather(*(_index(dsn, sql) for sql in secondary))
    else:
        for sql in secondary:
            await _index(dsn, sql)
    t_sec = time.perf_counter()
    spec = pgv.VectorTableSpec(dimension=dimension)
    con = await asyncpg.connect(dsn)
    try:
        await con.execute("SET maintenance_work_mem = '512MB'")
        res = await pgv.build_vector_index(con, spec, min_rows=50 * spec.ivfflat_lists)
    finally:
        await con.close()
    t_end = time.perf_counter()
    return {"copy_s": t_copy - t0, "secondary_indexes_s": t_sec - t_copy, "vector_index_s": t_end - t_sec,
            "seconds": t_end - t0, "vector_index": res.detail}


async def ceiling_real(dsn: str, batches: list, n: int, *, runs: int, connections: int, dimension: int, lz4: bool,
                       log=print, label: str = "ceiling") -> dict:
    """Median (by total) of ``runs`` raw COPY + index builds; the run with the median total is reported in full."""
    done = []
    for i in range(runs):
        r = await copy_and_index_once(dsn, batches, connections, dimension, lz4)
        done.append(r)
        log(f"  {label} {i + 1}/{runs}: {n:,} rows: COPY {r['copy_s']:.1f} s + secondary indexes "
            f"{r['secondary_indexes_s']:.1f} s + vector index {r['vector_index_s']:.1f} s = {r['seconds']:.1f} s")
    med = sorted(done, key=lambda r: r["seconds"])[(len(done) - 1) // 2]
    return {"rows": n, "runs_s": [round(r["seconds"], 3) for r in done], **med, "connections": connections,
            "batch_rows": PAGE, "vectors_per_s": n / med["seconds"] if med["seconds"] else None,
            "copy_vectors_per_s": n / med["copy_s"] if med["copy_s"] else None, "includes_indexes": True}
