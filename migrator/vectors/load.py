"""Load the vectors: every collection into document_chunk, batches committed exactly once with their ledger row.

The ledger lives in the pgvector database (PGVECTOR_DB_URL, default the app database), so a batch and its ledger
row always commit together; units are named `vector:<collection>` and resume from the last committed ordinal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import asyncpg

from migrator import ledger
from migrator.context import RunContext
from migrator.convert.vectors import ChunkConverter
from migrator.errors import PreflightError, TransientError
from migrator.parallel import run_all
from migrator.sources.chroma.client import CollectionInfo
from migrator.targets import pgvector as pgv, postgres as pgt
from migrator.vectors import source as vectors_source

BATCH = 1000
GROUP_CHUNKS = BATCH  # collections up to this size are loaded in groups: a COPY per group of up to this many chunks
GROUP_COLLECTIONS = 500  # ... and of at most this many collections
BEFORE_STEP = "vector-index-before"  # ledger step: the target's vector index and rows before the load
PREFIX = ledger.VECTOR_PREFIX


def unit_of(collection: str) -> str:
    """Ledger unit name of a collection."""
    return PREFIX + collection


async def execute(ctx: RunContext, *, run_id: str) -> None:
    """Load every collection of the plan into PGVECTOR_DB_URL's document_chunk (its own connection; with the ledger
    there too, under the same run id, when that is another database than the target's); then build document_chunk's
    indexes (secondary ones, ANALYZE, the vector index) and, for a pgvector database apart, end its ledger's run.

    Raises PreflightError (exit 4) when the pgvector database is another migration's or not ours to create in,
    TransientError (exit 75) when a connection is lost; `ctx.stop` ends it after the current batches."""
    if not ctx.plan.vectors:
        return
    async with _connection(ctx) as conn:
        if _separate(ctx):
            await _own_ledger(ctx, conn, run_id)
        await _load(ctx, conn)
        if not ctx.stop.requested:
            await _finish(ctx, conn, run_id)


def _separate(ctx: RunContext) -> bool:
    return ctx.settings.pgvector_url not in (None, ctx.settings.target_url)


@contextlib.asynccontextmanager
async def _connection(ctx: RunContext):
    """A bulk connection to the pgvector database; a lost connection becomes TransientError (exit 75)."""
    conn = await pgt.connect(ctx.settings.pgvector_url or ctx.settings.target_url, bulk=True)
    try:
        yield conn
    except Exception as exc:
        lost = pgt.lost_connection(exc, closed=conn.is_closed())
        if lost is None:
            raise
        raise lost from exc
    finally:
        await pgt.close_quietly(conn)


async def _finish(ctx: RunContext, conn: asyncpg.Connection, run_id: str) -> None:
    await _indexes(ctx, conn)
    if _separate(ctx):
        await ledger.finish_run(conn, run_id)


async def _own_ledger(ctx: RunContext, conn: asyncpg.Connection, run_id: str) -> None:
    """A pgvector database apart from the target keeps a ledger of its own: locked, and of this snapshot."""
    await ledger.lock(conn, "the pgvector target")
    await ledger.ensure(conn)
    there = await ledger.current_run(conn)
    if there is None:
        await ledger.start_run(conn, run_id=run_id, snapshot_id=ctx.snapshot.snapshot_id, mode="vectors",
                               revision=ctx.plan.source_revision, units=[])
    elif there["snapshot_id"] != ctx.snapshot.snapshot_id:
        raise PreflightError("the pgvector target's ledger was made from another snapshot",
                             detail=f"ledger: {there['snapshot_id']}, this snapshot: {ctx.snapshot.snapshot_id}")


async def _load(ctx: RunContext, conn: asyncpg.Connection) -> None:
    """`conn` makes the table; the collections, biggest first (small ones in groups), go over `--jobs`
    connections of their own."""
    vectors = ctx.plan.vectors
    steps = await ledger.steps(conn)
    if "vector-schema" not in steps:
        await _prepare(ctx, conn)
    units = {u["unit"]: u for u in await ledger.units(conn)}
    todo = sorted((c for c in vectors.collections if c.count and not units.get(unit_of(c.name), {}).get("done")),
                  key=lambda c: (-c.count, c.name))
    if todo:
        source = vectors_source.batches(ctx.settings, ctx.snapshot)
        try:
            await _load_collections(ctx, todo, source)
        finally:
            source.close()


async def _indexes(ctx: RunContext, conn: asyncpg.Connection) -> None:
    """ANALYZE, then the vector index (HridaAI's name and definition; an ivfflat index the target had on a much
    smaller table rebuilt) on `conn` while the secondary indexes build on a connection of their own (CREATE INDEX
    takes a SHARE lock: builds on one table run at once; ANALYZE would wait for them, so it goes first); once: a
    ledger step."""
    spec, snapshot_id = ctx.plan.vectors.spec, ctx.snapshot.snapshot_id
    if "vector-index" in await ledger.steps(conn):
        return
    min_rows = 50 * spec.ivfflat_lists if spec.method == "ivfflat" else 1  # HridaAI >= 0.11.4's own rule
    await conn.execute("SET maintenance_work_mem = '512MB'")
    await conn.execute("SET search_path TO public")
    await pgv.analyze(conn)  # a column list: no index is read, so none needs to exist yet

    async def vector_index() -> str:
        detail = await _rebuilt_if_made_before_the_data(conn, (await ledger.steps(conn)).get(BEFORE_STEP))
        return detail if detail is not None else (await pgv.build_vector_index(conn, spec, min_rows=min_rows)).detail

    async def secondary() -> None:
        async with _connection(ctx) as other:
            # off the critical path (the vector index takes longer), so no parallel workers: alone, a parallel GIN
            # build costs less CPU (33k chunks: 1.0 against 2.1 core-s), but beside the vector index on 2 cores the
            # vector-only run was 0.3 s slower with them and the whole run no faster
            await other.execute("SET maintenance_work_mem = '256MB'; SET max_parallel_maintenance_workers = 0")
            await other.execute("SET search_path TO public")
            await pgv.create_secondary_indexes(other)
        ctx.progress.event("finalize", step="vector-secondary-indexes")  # done: the bench times it apart

    detail, _ = await run_all([vector_index(), secondary()])
    await ledger.step_done(conn, "vector-index", snapshot_id, detail)
    ctx.progress.event("finalize", step="vector-index", detail=detail)


async def _rebuilt_if_made_before_the_data(conn: asyncpg.Connection, before: str | None) -> str | None:
    """REINDEX an ivfflat index the target had before the load when the table then held under a tenth of what it
    holds now (HridaAI < 0.11.4 builds it at startup, on the empty table: its lists are trained on nothing); the
    step's detail, or None when there is nothing to rebuild."""
    state = json.loads(before) if before else {}
    if state.get("method") != "ivfflat":
        return None
    rows = await conn.fetchval(f"SELECT count(*) FROM {pgv.TABLE}")
    if state.get("rows", 0) * 10 >= rows:
        return None
    await pgv.rebuild_vector_index(conn)
    return (f"rebuilt {pgv.VECTOR_INDEX} (ivfflat, same name and definition): it was built on {state['rows']} "
            f"rows before the load, the table now holds {rows}")


def work_items(todo: list[CollectionInfo], committed: dict[str, ledger.UnitProgress]) -> list[list[CollectionInfo]]:
    """What the worker connections take, biggest first: a collection alone (bigger than GROUP_CHUNKS, or one an
    earlier run left half loaded: it resumes after its last committed batch), or a group of small ones loaded
    together (one COPY, each still its own ledger unit, all committed at once: a resume finds each whole or not
    at all)."""
    items: list[list[CollectionInfo]] = []
    group: list[CollectionInfo] = []
    size = 0
    for info in todo:
        if info.count > GROUP_CHUNKS or unit_of(info.name) in committed:
            items.append([info])
            continue
        if group and (size + info.count > GROUP_CHUNKS or len(group) >= GROUP_COLLECTIONS):
            items.append(group)
            group, size = [], 0
        group.append(info)
        size += info.count
    return items + ([group] if group else [])


async def _load_collections(ctx: RunContext, todo: list[CollectionInfo], source) -> None:
    """Each worker connection takes the next collection, or group of small ones, until none is left."""
    settings = ctx.settings
    url = settings.pgvector_url or settings.target_url
    workers = [await pgt.connect(url, bulk=True) for _ in range(min(max(1, settings.jobs), len(todo)))]
    committed = await ledger.progress(workers[0])
    queue = work_items(todo, committed)

    async def work(wconn) -> None:
        await pgv.register_encoded(wconn)
        while queue and not ctx.stop.requested:
            item = queue.pop(0)
            try:
                if len(item) == 1 and (item[0].count > GROUP_CHUNKS or unit_of(item[0].name) in committed):
                    await _copy_collection(ctx, wconn, source, item[0], committed.get(unit_of(item[0].name)))
                else:
                    await _copy_group(ctx, wconn, source, item)
            except Exception as exc:
                if wconn.is_closed():
                    raise TransientError("lost the connection to the pgvector target during the load",
                                         detail=f"{exc.__class__.__name__}: {exc}",
                                         hint="everything committed is in the ledger; `migrate run --resume` "
                                              "continues") from exc
                raise

    try:
        await run_all(work(c) for c in workers)
    finally:
        for c in workers:
            await pgt.close_quietly(c)


async def _prepare(ctx: RunContext, conn: asyncpg.Connection) -> None:
    """The table and the ledger units. The btree/GIN indexes are built after the load, beside the vector index
    (measured on 33k chunks: COPY with them 3.8 server core-s, without them 1.4 plus 0.8 for the builds)."""
    spec = ctx.plan.vectors.spec
    try:
        async with conn.transaction():
            await pgv.ensure_extension(conn)
            await conn.execute("SET LOCAL search_path TO public")
            await ledger.step_done(conn, BEFORE_STEP, ctx.snapshot.snapshot_id, json.dumps(await _before(conn)))
            await pgv.create_table(conn, spec, with_indexes=False)
            await ledger.add_units(conn, [(unit_of(c.name), "collection", c.count, 0)
                                          for c in ctx.plan.vectors.collections])
            await ledger.step_done(conn, "vector-schema", ctx.snapshot.snapshot_id, spec.column_type)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise PreflightError("not allowed to create the vector extension or document_chunk",
                             detail=str(exc), hint="a DBA runs in the target database: CREATE EXTENSION vector; "
                                                   "and grants CREATE on the database/schema") from None


async def _before(conn: asyncpg.Connection) -> dict:
    """What document_chunk was before this run touched it: its vector index's method and its rows."""
    found = await pgv.existing_table(conn)
    if found is None:
        return {"method": None, "rows": 0}
    return {"method": found["vector_index"], "rows": await conn.fetchval(f"SELECT count(*) FROM {pgv.TABLE}")}


async def _copy_group(ctx: RunContext, conn: asyncpg.Connection, source, group: list[CollectionInfo]) -> None:
    """Small collections, each read whole (a thread), in one COPY and one transaction with their ledger rows."""
    spec, snapshot_id = ctx.plan.vectors.spec, ctx.snapshot.snapshot_id

    def produce() -> list[tuple[CollectionInfo, int, tuple[list, list, list]]]:
        out = []
        for info in group:
            batches = source.open(info.name, start=0, batch_size=BATCH)
            try:
                chunks = [c for b in batches for c in b.chunks]
            finally:
                batches.close()
            collisions = ctx.plan.vectors.collisions.get(info.name, {})
            out.append((info, len(chunks), convert_chunks(info.name, chunks, collisions, spec, ctx.plan.policies)))
        return out

    read = await asyncio.to_thread(produce)
    records = [r for _, _, (recs, _, _) in read for r in recs]
    whole = [ledger.WholeUnit(unit_of(info.name), n, len(recs), sum(len(r[3] or "") for r in recs), q, f)
             for info, n, (recs, q, f) in read]
    async with conn.transaction():
        if records:
            await pgv.copy_encoded(conn, records)
        await ledger.record_whole_units(conn, snapshot_id, whole)
    ctx.progress.event("vectors", group=len(group), chunks=len(records), state="committed")
    for info, n, _ in read:
        unit = unit_of(info.name)
        ctx.progress.start(unit, rows=info.count, nbytes=0)
        ctx.progress.advance(unit, rows=n, nbytes=0, batch=1)
        ctx.progress.finish(unit)
        ctx.progress.event("vectors", unit=unit, read_by=source.read_by.get(info.name, "chromadb"))


async def _copy_collection(ctx: RunContext, conn: asyncpg.Connection, source, info: CollectionInfo,
                           done: ledger.UnitProgress | None) -> None:
    """One collection from its last committed ordinal (`done`); the next batch is read and converted (a thread)
    while the current one is copied."""
    name, unit = info.name, unit_of(info.name)
    spec, collisions = ctx.plan.vectors.spec, ctx.plan.vectors.collisions.get(info.name, {})
    start = done.last_key if done else 0
    batch_no = done.batches if done else 0
    ctx.progress.start(unit, rows=info.count, nbytes=0)
    batches = source.open(name, start=start, batch_size=BATCH)

    def produce():
        batch = next(batches, None)
        if batch is None:
            return None
        return batch, convert_chunks(name, batch.chunks, collisions, spec, ctx.plan.policies)

    pending = asyncio.ensure_future(asyncio.to_thread(produce))
    try:
        while (item := await pending) is not None:
            batch, (records, quarantine, fixups) = item
            pending = asyncio.ensure_future(asyncio.to_thread(produce))
            batch_no += 1
            async with conn.transaction():
                await pgv.copy_encoded(conn, records)
                await ledger.record_batch(conn, unit=unit, batch_no=batch_no, snapshot_id=ctx.snapshot.snapshot_id,
                                          first_key=batch.start, last_key=batch.end, rows=len(records),
                                          nbytes=sum(len(r[3] or "") for r in records), quarantine=quarantine,
                                          fixups=fixups)
            ctx.progress.advance(unit, rows=len(batch.chunks), nbytes=0, batch=batch_no)
            ctx.progress.event("vectors", unit=unit, batch=batch_no, chunks=len(records), state="committed")
            if ctx.stop.requested:
                return
    finally:
        await asyncio.gather(pending, return_exceptions=True)  # a thread cannot be cancelled: let it finish
        batches.close()
    await ledger.mark_unit_done(conn, unit)
    ctx.progress.finish(unit)
    ctx.progress.event("vectors", unit=unit, read_by=source.read_by.get(name, "chromadb"))


def convert_chunks(name: str, chunks, collisions: dict, spec, actions: dict[str, str]) -> tuple[list, list, list]:
    """COPY records (vectors encoded per batch), quarantine rows and fixups of one batch; text and metadata
    converted under the run's policies (`actions`: plan.policies)."""
    conv = ChunkConverter(actions)
    keep = []
    for c in chunks:
        if c.id in collisions:
            conv.reject(c, f"chunk id also in collection {collisions[c.id]}", "chunk_id_collision", "id")
        elif c.embedding is None:
            conv.reject(c, "no vector in the Chroma store for this chunk", "missing_vector", "vector")
        else:
            keep.append(c)
    records = []
    for c, vec in zip(keep, pgv.encode_vectors([c.embedding for c in keep], spec)):
        if isinstance(vec, str):
            conv.reject(c, vec, "vector_invalid", "vector")
        elif (values := conv.values(c)) is not None:
            records.append((c.id, vec, name, *values))
    return records, conv.quarantine, conv.fixups
