"""Load the vectors: every collection into document_chunk, batches committed exactly once with their ledger row.

The ledger lives in the pgvector database (PGVECTOR_DB_URL, default the app database), so a batch and its ledger
row always commit together; units are named `vector:<collection>` and resume from the last committed ordinal.
"""

from __future__ import annotations

import asyncpg

from migrator import ledger, vectors_source
from migrator.errors import PreflightError
from migrator.plan_model import Plan
from migrator.progress import Progress
from migrator.settings import Settings
from migrator.snapshot import Snapshot
from migrator.sources import chroma
from migrator.targets import pgvector as pgv
from migrator.vectors_plan import spec_of

BATCH = 1000
PREFIX = "vector:"


def unit_of(collection: str) -> str:
    """Ledger unit name of a collection."""
    return PREFIX + collection


async def execute(conn: asyncpg.Connection, settings: Settings, plan: Plan, snapshot: Snapshot, *,
                  progress: Progress, stop) -> None:
    """Load every collection of plan.vectors through `conn` (a connection to the pgvector database)."""
    if not plan.vectors:
        return
    spec = spec_of(settings)
    client = vectors_source.client(settings, snapshot)
    steps = await ledger.steps(conn)
    if "vector-schema" not in steps:
        await _prepare(conn, plan, spec, snapshot)
    units = {u["unit"]: u for u in await ledger.units(conn)}
    for info in plan.vectors["collections"]:
        if stop.requested:
            return
        if info["count"] and not units.get(unit_of(info["name"]), {}).get("done"):
            await _collection(conn, client, info, plan.vectors["collisions"].get(info["name"], {}), spec,
                              snapshot, progress, stop)
    if stop.requested:
        return
    if "vector-index" not in steps:
        min_rows = 50 * spec.ivfflat_lists if spec.method == "ivfflat" else 1  # HridaAI >= 0.11.4's own rule
        await conn.execute("SET maintenance_work_mem = '512MB'")
        await conn.execute("SET search_path TO public")
        await pgv.create_secondary_indexes(conn)
        result = await pgv.build_vector_index(conn, spec, min_rows=min_rows)
        await ledger.step_done(conn, "vector-index", snapshot.snapshot_id, result.detail)
        progress.event("finalize", step="vector-index", detail=result.detail)


async def _prepare(conn, plan: Plan, spec, snapshot: Snapshot) -> None:
    try:
        async with conn.transaction():
            await pgv.ensure_extension(conn)
            await conn.execute("SET LOCAL search_path TO public")
            await pgv.create_table(conn, spec, with_indexes=False)  # built after the load: 2x faster COPY
            await ledger.add_units(conn, [(unit_of(c["name"]), "collection", c["count"], 0)
                                          for c in plan.vectors["collections"]])
            await ledger.step_done(conn, "vector-schema", snapshot.snapshot_id, spec.column_type)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise PreflightError("not allowed to create the vector extension or document_chunk",
                             detail=str(exc), hint="a DBA runs in the target database: CREATE EXTENSION vector; "
                                                   "and grants CREATE on the database/schema") from None


async def _collection(conn, client, info: dict, collisions: dict, spec, snapshot: Snapshot, progress: Progress,
                      stop) -> None:
    name, unit = info["name"], unit_of(info["name"])
    done = (await ledger.progress(conn)).get(unit)
    start = done.last_key if done else 0
    batch_no = done.batches if done else 0
    progress.start(unit, rows=info["count"], nbytes=0)
    for batch in chroma.iter_batches_client(client, name, batch_size=BATCH, start=start):
        batch_no += 1
        rows, quarantine, fixups = _convert(name, batch.chunks, collisions, spec)
        async with conn.transaction():
            if rows:
                await pgv.copy_chunks(conn, rows, spec=spec)
            await ledger.record_batch(conn, unit=unit, batch_no=batch_no, snapshot_id=snapshot.snapshot_id,
                                      first_key=batch.start, last_key=batch.end, rows=len(rows),
                                      nbytes=sum(len(r[3] or "") for r in rows), quarantine=quarantine,
                                      fixups=fixups)
        progress.advance(unit, rows=len(batch.chunks), nbytes=0, batch=batch_no)
        if stop.requested:
            return
    await ledger.mark_unit_done(conn, unit)
    progress.finish(unit)


def _convert(name: str, chunks, collisions: dict, spec) -> tuple[list, list, list]:
    rows, quarantine, fixups = [], [], []
    for c in chunks:
        key = ledger.dumps([c.id])
        raw = _RawJson(c)  # serialised only if the chunk is quarantined (most never are)
        if c.id in collisions:
            quarantine.append((key, f"chunk id also in collection {collisions[c.id]}", "chunk_id_collision",
                               "id", str(raw)))
            continue
        if c.embedding is None:
            quarantine.append((key, "no vector in the Chroma store for this chunk", "missing_vector", "vector", str(raw)))
            continue
        try:
            vec = pgv.pad(c.embedding, spec.dimension)
        except ValueError as exc:
            quarantine.append((key, str(exc), "vector_invalid", "vector", str(raw)))
            continue
        text, text_changed = pgv.clean_text(c.document)
        meta, meta_changed = pgv.to_vmetadata(c.metadata)
        if text_changed:
            fixups.append((key, "text", "nul_in_text", "strip", ledger.dumps(c.document)))
        if meta_changed:
            fixups.append((key, "vmetadata", "nul_in_text", "strip", ledger.dumps(c.metadata)))
        rows.append((c.id, vec, name, text, meta))
    return rows, quarantine, fixups


class _RawJson:
    """The full chunk as ASCII JSON for the quarantine table, built on demand."""

    def __init__(self, chunk) -> None:
        self.chunk = chunk

    def __str__(self) -> str:
        c = self.chunk
        return ledger.dumps({"id": c.id, "document": c.document, "metadata": c.metadata,
                             "embedding": None if c.embedding is None else [float(x) for x in c.embedding]})
