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
"""
from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import asyncpg
import numpy as np

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


def chroma_read(store: Path, runs: int, log=print) -> tuple[dict, list]:
    """Median vectors/s of ``runs`` full reads; also returns the pages of the last one."""
    client = open_client(store)
    times, pages, n = [], [], 0
    for i in range(runs):
        secs, n, pages = read_all(client, keep=i == runs - 1)
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
    queue: asyncio.Queue = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)

    async def worker(con):
        while not queue.empty():
            await con.copy_records_to_table(pgv.TABLE, records=queue.get_nowait(), columns=list(pgv.COLUMNS))

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in cons))
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
