"""Stage 3 — load: every table in FK order, in batches that commit exactly once with their ledger row.

`execute(ctx, resume=...)` is the stage: claim the target, split the tables into parts, begin (or continue) the
run, load the parts over `--jobs` workers, hand the vectors to their own lane, finalize. Reading and converting the
next batch (a thread) overlaps the COPY of the current one (the event loop).
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from migrator.context import RunContext
from migrator.load import split
from migrator.load.begin import begin, claim
from migrator.load.finalize import LoadReport, finalize, summarise
from migrator.load.part import load_part
from migrator.load.workers import Pool
from migrator.parallel import run_all
from migrator.targets import postgres as pgt
from migrator.vectors import load as vectors_load

log = logging.getLogger(__name__)


async def execute(ctx: RunContext, *, resume: bool, pool: Pool | None = None) -> LoadReport:
    """Load every table, then the vectors; resumable; returns what was committed (measured from the ledger).
    `pool`: load workers started earlier (`Pool(settings.jobs, ...)`), handed the context here and closed at the end;
    without one, they are started here (with `--jobs` > 1).

    Raises PreflightError (exit 4) when the target is not ours to write (see begin), TransientError (exit 75) when
    the connection is lost; `ctx.stop` set by a signal ends it after the current batches (report.interrupted)."""
    settings, plan, snapshot = ctx.settings, ctx.plan, ctx.snapshot
    conn = await pgt.connect(settings.target_url, bulk=True)  # failing here: a pool passed in is the caller's
    workers: list[asyncpg.Connection] = []
    clean = False
    try:
        if pool is None and settings.jobs > 1:
            pool = Pool(settings.jobs, ctx.progress)
        if pool is not None:
            pool.start(ctx, asyncio.get_running_loop())
        await claim(conn)
        loaded = [t for t in plan.tables if t.action in ("load", "quarantine") and t.rows]
        parts = await asyncio.to_thread(split.split_all, snapshot.db_path, loaded)
        run, resumed = await begin(ctx, conn, parts, resume=resume)
        report = LoadReport(run["run_id"], snapshot.snapshot_id, run["mode"], resumed)
        # the two lanes at once: tables over the load workers, then the tables' finalize; vectors over connections
        # of this process, then document_chunk's indexes (document_chunk references no table). The run is marked
        # done only once both lanes are.
        vectors = asyncio.create_task(_vectors(ctx, run["run_id"]))
        try:
            await _first_failure(_tables_then_close(ctx, pool, parts), vectors)
            if ctx.stop.requested:
                await vectors  # it stops after its current batches too
                report.interrupted = True
                return await summarise(conn, report)
            workers = [await pgt.connect(settings.target_url, bulk=True) for _ in range(max(0, settings.jobs - 1))]
            await finalize(ctx, conn, [conn, *workers], run, before_done=vectors)
        finally:
            if not vectors.done():
                vectors.cancel()
            await asyncio.gather(vectors, return_exceptions=True)
        clean = True
        return await summarise(conn, report)
    except Exception as exc:
        lost = pgt.lost_connection(exc, closed=any(c.is_closed() for c in [conn, *workers]))
        if lost is None:
            raise
        raise lost from exc
    finally:
        if pool is not None:
            pool.close(kill=not clean)
        for c in workers:
            await pgt.close_quietly(c)
        await pgt.close_quietly(conn)


async def _tables_then_close(ctx: RunContext, pool: Pool | None, parts: dict[str, list[split.Part]]) -> None:
    await _load_tables(ctx, pool, parts)
    if pool is not None:
        pool.close(kill=False)


async def _vectors(ctx: RunContext, run_id: str) -> None:
    """The vector lane: every collection, then (unless stopped) document_chunk's indexes."""
    if not ctx.stop.requested and ctx.plan.vectors:
        ctx.progress.event("vectors", state="start")
        await vectors_load.execute(ctx, run_id=run_id)


async def _first_failure(tables, vectors: asyncio.Task) -> None:
    """Run the table lane while `vectors` runs; the first failure of either cancels the table lane and raises
    (the caller cancels `vectors`). Returns when the table lane is done, `vectors` possibly still running."""
    lane = asyncio.create_task(tables)
    try:
        pending = {lane, vectors}
        while lane in pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if vectors in done and vectors.exception() is not None:
                raise vectors.exception()
        await lane  # its exception, if any
    finally:
        if not lane.done():
            lane.cancel()
            await asyncio.gather(lane, return_exceptions=True)


async def _load_tables(ctx: RunContext, pool: Pool | None, parts: dict[str, list[split.Part]]) -> None:
    """Table parts in parallel over `--jobs` load workers (processes; with one job, this process and one
    connection); a table's parts start once every parent table it references is loaded (all its parts)."""
    tables = sorted((ctx.plan.table(name) for name in parts), key=lambda t: (t.order, -t.bytes, t.name))
    todo = [p for t in tables for p in parts[t.name]]
    if not todo:
        return
    schedule = _Schedule(tables, parts, todo, ctx.stop)
    if pool is None:
        conn = await pgt.connect(ctx.settings.target_url, bulk=True)
        try:
            await schedule.work(lambda part: load_part(ctx, conn, part))
        finally:
            await pgt.close_quietly(conn)
        return
    relay = asyncio.create_task(_relay_stop(ctx, pool))
    try:
        await run_all(schedule.work(pool.load) for _ in range(min(pool.workers, len(todo))))
    finally:
        relay.cancel()


class _Schedule:
    """Hands out parts to workers: parents' parts first (every part of a table a part references is done), in
    order of `todo`; with a cycle between tables, the next part anyway (per-batch FK checks quarantine orphans)."""

    def __init__(self, tables: list, parts: dict[str, list[split.Part]], todo: list[split.Part], stop) -> None:
        self.waiting = {t.name: {fk["ref_table"] for fk in t.fks} & set(parts) for t in tables}
        self.left = {name: len(ps) for name, ps in parts.items()}
        self.todo, self.stop = todo, stop
        self.done: set[str] = set()
        self.running = 0
        self.ready = asyncio.Condition()

    async def next_part(self) -> split.Part | None:
        """The next part whose parents are loaded; None once nothing is left or a stop was asked."""
        async with self.ready:
            while True:
                if self.stop.requested or not self.todo:
                    return None
                pick = next((p for p in self.todo if self.waiting[p.table] - {p.table} <= self.done), None)
                if pick is None and not self.running:
                    pick = self.todo[0]  # a cycle between tables: go on
                if pick is not None:
                    self.todo.remove(pick)
                    self.running += 1
                    return pick
                await self.ready.wait()

    async def work(self, load) -> None:
        """One worker's loop: `await load(part)` (True once the part is done) until no part is left."""
        while (part := await self.next_part()) is not None:
            finished = False
            try:
                finished = await load(part)
            finally:
                async with self.ready:
                    self.running -= 1
                    if finished:
                        self.left[part.table] -= 1
                        if not self.left[part.table]:
                            self.done.add(part.table)
                    self.ready.notify_all()


async def _relay_stop(ctx: RunContext, pool: Pool) -> None:
    """Hand a stop request (a signal) to the workers: they commit their current batch and return."""
    while not ctx.stop.requested:
        await asyncio.sleep(0.2)
    pool.stop()
