"""Stage 3 — load: every table in FK order, in batches that commit exactly once with their ledger row.

Reading and converting the next batch (a thread) overlaps the COPY of the current one (the event loop).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import asdict, dataclass, field

import asyncpg

from migrator import catalog as cat
from migrator import ledger
from migrator.load import split as load_parts
from migrator.load import workers as load_workers
from migrator.vectors import load as vectors_load
from migrator.parallel import run_all
from migrator.errors import PreflightError
from migrator.load.part import load_part
from migrator.plan.model import Plan
from migrator.progress import Progress
from migrator.settings import Settings
from migrator.snapshot import Snapshot
from migrator.targets import postgres as pgt

log = logging.getLogger(__name__)
INDEX_MEMORY = "256MB"  # per index build, session only
LOCK_WAIT = 5  # seconds
# a killed run's worker session ends once its backend notices the client is gone: after the statement it is in,
# which on a busy server (one huge chat compressing) can take a while
WRITERS_WAIT = 30  # seconds


@dataclass
class LoadReport:
    run_id: str
    snapshot_id: str
    mode: str
    resumed: bool
    tables: dict[str, dict] = field(default_factory=dict)
    steps: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False

    def asdict(self) -> dict:
        """JSON form."""
        return asdict(self)

    def asstr(self) -> str:
        """For people."""
        lines = [f"run {self.run_id} ({self.mode}{', resumed' if self.resumed else ''}) of snapshot "
                 f"{self.snapshot_id}", f"{'table':<26} {'rows':>10} {'quarantined':>12} {'fixups':>8} {'batches':>8}"]
        for name, t in self.tables.items():
            lines.append(f"{name:<26} {t['rows']:>10,} {t['quarantined']:>12,} {t['fixups']:>8,} {t['batches']:>8,}")
        lines.append("steps: " + ", ".join(self.steps) if self.steps else "steps: none")
        return "\n".join(lines)


class StopFlag:
    """Set by the first SIGTERM/SIGINT: finish the current batch, commit it, exit 75."""

    def __init__(self) -> None:
        self.requested = False


async def execute(settings: Settings, plan: Plan, snapshot: Snapshot, *, resume: bool, progress: Progress,
                  stop: StopFlag | None = None) -> LoadReport:
    """Load every table; resumable; returns what was committed (measured from the ledger)."""
    stop = stop or StopFlag()
    conn = await pgt.connect(settings.target_url, bulk=True)
    workers: list[asyncpg.Connection] = []
    pool, clean = None, False
    try:
        if settings.jobs > 1:  # started now: the workers' start-up overlaps the lock, the split and the schema
            pool = load_workers.Pool(load_workers.Job(settings, plan, snapshot), settings.jobs, progress,
                                     asyncio.get_running_loop())
        await _lock(conn, "this target")
        await _no_old_writers(conn)
        loaded = [t for t in plan.tables if t.action in ("load", "quarantine") and t.rows]
        parts = await asyncio.to_thread(load_parts.split_all, snapshot.db_path, loaded)
        run, resumed = await _begin(conn, settings, plan, snapshot, parts, resume=resume, progress=progress)
        report = LoadReport(run["run_id"], snapshot.snapshot_id, run["mode"], resumed)
        await _load_tables(pool, settings, plan, snapshot, parts, progress, stop)
        if pool is not None:
            pool.close(kill=False)
        if not stop.requested and plan.vectors:
            progress.event("vectors", state="start")
            await _load_vectors(conn, settings, plan, snapshot, run, progress, stop)
        if stop.requested:
            report.interrupted = True
            return await _summarise(conn, report)
        workers = [await pgt.connect(settings.target_url, bulk=True) for _ in range(max(0, settings.jobs - 1))]
        await _finalize(conn, [conn, *workers], plan, snapshot, run, progress)
        clean = True
        return await _summarise(conn, report)
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


async def _load_tables(pool: load_workers.Pool | None, settings: Settings, plan: Plan, snapshot: Snapshot,
                       parts: dict[str, list[load_parts.Part]], progress: Progress, stop: StopFlag) -> None:
    """Table parts in parallel over `--jobs` load workers (processes; with one job, this process and one
    connection); a table's parts start once every parent table it references is loaded (all its parts)."""
    spec = {t.name: t for t in plan.tables}
    tables = sorted((spec[name] for name in parts), key=lambda t: (t.order, -t.bytes, t.name))
    todo = [p for t in tables for p in parts[t.name]]
    if not todo:
        return
    waiting = {t.name: {fk["ref_table"] for fk in t.fks} & set(parts) for t in tables}
    left = {name: len(ps) for name, ps in parts.items()}
    done: set[str] = set()
    running = [0]
    ready = asyncio.Condition()

    async def next_part() -> load_parts.Part | None:
        async with ready:
            while True:
                if stop.requested or not todo:
                    return None
                pick = next((p for p in todo if waiting[p.table] - {p.table} <= done), None)
                if pick is None and not running[0]:
                    pick = todo[0]  # a cycle between tables: go on; per-batch FK checks quarantine true orphans
                if pick is not None:
                    todo.remove(pick)
                    running[0] += 1
                    return pick
                await ready.wait()

    async def work(load) -> None:
        while (part := await next_part()) is not None:
            finished = False
            try:
                finished = await load(part)
            finally:
                async with ready:
                    running[0] -= 1
                    if finished:
                        left[part.table] -= 1
                        if not left[part.table]:
                            done.add(part.table)
                    ready.notify_all()

    if pool is None:
        conn = await pgt.connect(settings.target_url, bulk=True)
        try:
            await work(lambda part: load_part(conn, settings, plan, spec[part.table], part, spec, snapshot,
                                              progress, stop))
        finally:
            await pgt.close_quietly(conn)
        return
    relay = asyncio.create_task(_relay_stop(stop, pool))
    try:
        await run_all(work(pool.load) for _ in range(min(pool.workers, len(todo))))
    finally:
        relay.cancel()


async def _relay_stop(stop: StopFlag, pool: load_workers.Pool) -> None:
    """Hand a stop request (a signal) to the workers: they commit their current batch and return."""
    while not stop.requested:
        await asyncio.sleep(0.2)
    pool.stop()


async def _load_vectors(conn, settings: Settings, plan: Plan, snapshot: Snapshot, run: dict, progress: Progress,
                        stop: StopFlag) -> None:
    """Vectors go to PGVECTOR_DB_URL; with its own ledger when that is another database."""
    if not plan.vectors:
        return
    if settings.pgvector_url in (None, settings.target_url):
        await vectors_load.execute(conn, settings, plan, snapshot, progress=progress, stop=stop)
        return
    vconn = await pgt.connect(settings.pgvector_url, bulk=True)
    try:
        await _lock(vconn, "the pgvector target")
        await ledger.ensure(vconn)
        there = await ledger.current_run(vconn)
        if there is None:
            await ledger.start_run(vconn, run_id=run["run_id"], snapshot_id=snapshot.snapshot_id, mode="vectors",
                                   revision=plan.source_revision, units=[])
        elif there["snapshot_id"] != snapshot.snapshot_id:
            raise PreflightError("the pgvector target's ledger was made from another snapshot",
                                 detail=f"ledger: {there['snapshot_id']}, this snapshot: {snapshot.snapshot_id}")
        await vectors_load.execute(vconn, settings, plan, snapshot, progress=progress, stop=stop)
        if not stop.requested:
            await ledger.finish_run(vconn, run["run_id"])
    finally:
        await pgt.close_quietly(vconn)


async def _lock(conn: asyncpg.Connection, what: str) -> None:
    """The target's advisory lock, waited for a few seconds (the session of a killed run ends once the server
    notices); refused when another run still holds it."""
    for _ in range(LOCK_WAIT * 4):
        if await ledger.try_lock(conn):
            return
        await asyncio.sleep(0.25)
    raise PreflightError(f"another `migrate run` is already working on {what} (it holds the migration lock)",
                         detail="sessions: SELECT pid, backend_start, state FROM pg_stat_activity "
                                "WHERE application_name = 'hridaai-migrate'",
                         hint="wait for it to finish (watch it with `migrate status`), then run `migrate run "
                              "--resume`; never run two migrations into one target at once")


async def _no_old_writers(conn: asyncpg.Connection) -> None:
    """Load workers of a killed run die with it; wait until the server has ended their sessions too."""
    if not await ledger.writers_gone(conn, timeout=WRITERS_WAIT):
        raise PreflightError("load workers of an earlier run are still connected to the target",
                             detail="sessions: SELECT pid, backend_start, state FROM pg_stat_activity "
                                    "WHERE application_name = 'hridaai-migrate'",
                             hint="they stop after their current batch once their run is gone; if they stay, end "
                                  "them with pg_terminate_backend(pid), then run `migrate run --resume`")


async def _begin(conn, settings: Settings, plan: Plan, snapshot: Snapshot, parts: dict[str, list[load_parts.Part]],
                 *, resume: bool, progress: Progress) -> tuple[dict, bool]:
    """Continue the recorded run, or create schema + ledger + run in one transaction."""
    run = await ledger.current_run(conn)
    if run is not None:
        if run["snapshot_id"] != snapshot.snapshot_id:
            raise PreflightError("the target's ledger was made from another snapshot",
                                 detail=f"ledger: {run['snapshot_id']}, this snapshot: {snapshot.snapshot_id}",
                                 hint="resume with the snapshot that run used (same --work-dir), or migrate into "
                                      "an empty database")
        if run["state"] != "done" and not resume:
            raise PreflightError(f"an unfinished run ({run['run_id']}) is recorded in the target",
                                 hint="continue it with `migrate run --resume`")
        if run["state"] == "done" and not resume:
            raise PreflightError("this target already holds a completed migration of this snapshot",
                                 hint="check it with `migrate verify`; `migrate run --resume` is a no-op")
        return run, True
    if plan.errors:
        hints = [c.hint for c in plan.errors[:3] if c.hint]
        raise PreflightError(f"the plan has {len(plan.errors)} error-level checks",
                             detail="; ".join(f"{c.code}: {c.message}" for c in plan.errors[:5]),
                             hint="; ".join(hints + ["see `migrate plan` for each check and what to do"]))
    run_id = uuid.uuid4().hex[:12]
    mode = "existing" if plan.mode.startswith("existing") else "create"
    progress.event("schema", state="start", mode=mode)
    async with conn.transaction():
        await ledger.ensure(conn)
        await _prepare_schema(conn, settings, plan, mode)
        units = [(p.unit, "table", p.rows, p.bytes) for ps in parts.values() for p in ps]
        units += [(t.name, "table", 0, 0) for t in plan.tables
                  if t.action in ("load", "quarantine") and t.name not in parts]
        await ledger.start_run(conn, run_id=run_id, snapshot_id=snapshot.snapshot_id, mode=mode,
                               revision=plan.source_revision, units=units)
        await ledger.step_done(conn, "schema", snapshot.snapshot_id, mode)
        await ledger.step_done(conn, "policies", snapshot.snapshot_id, ledger.dumps(plan.policies))
    return {"run_id": run_id, "mode": mode, "snapshot_id": snapshot.snapshot_id, "state": "loading"}, False


async def _prepare_schema(conn, settings: Settings, plan: Plan, mode: str) -> None:
    schema = cat.qi(plan.schema)
    if mode == "create":
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(f"SET LOCAL search_path TO {schema}")
        for stmt in cat.create_statements(cat.load(plan.source_revision)):
            await conn.execute(stmt)
        return
    present = {t.name for t in plan.tables if t.action in ("load", "stamp", "absent")}
    if settings.force_clear:
        names = ", ".join(f"{schema}.{cat.qi(n)}" for n in sorted(present - {"alembic_version"}))
        await conn.execute(f"TRUNCATE {names} CASCADE")
    elif "config" in present:
        await conn.execute(f"DELETE FROM {schema}.config")  # HridaAI's first-start seed rows


async def _finalize(conn, workers: list, plan: Plan, snapshot: Snapshot, run: dict, progress: Progress) -> None:
    """Indexes (create mode), sequences, alembic_version, ANALYZE — each recorded as a step, each idempotent."""
    steps = await ledger.steps(conn)
    schema = cat.qi(plan.schema)
    spec = cat.load(plan.source_revision) if run["mode"] == "create" else None
    if spec is not None and "indexes" not in steps:
        progress.event("finalize", step="indexes")
        await _build_indexes(workers or [conn], schema, cat.index_statements(spec))
        await ledger.step_done(conn, "indexes", snapshot.snapshot_id)
    if "sequences" not in steps:
        progress.event("finalize", step="sequences")
        sequences = spec.sequences if spec else await _live_sequences(conn, plan.schema)
        async with conn.transaction():
            done = await pgt.reset_sequences(conn, list(sequences), plan.schema)
            await ledger.step_done(conn, "sequences", snapshot.snapshot_id, ledger.dumps(done))
    if "alembic" not in steps:
        progress.event("finalize", step="alembic")
        async with conn.transaction():
            if run["mode"] == "create":
                await conn.execute(f"INSERT INTO {schema}.alembic_version (version_num) VALUES ($1)",
                                   plan.source_revision)
            await ledger.step_done(conn, "alembic", snapshot.snapshot_id, plan.source_revision)
    progress.event("finalize", step="analyze")
    await _analyze(workers or [conn])
    await ledger.step_done(conn, "analyze", snapshot.snapshot_id)
    await ledger.finish_run(conn, run["run_id"])
    progress.event("finalize", step="done")


async def _build_indexes(conns: list, schema: str, statements: list[str]) -> None:
    """CREATE INDEX IF NOT EXISTS statements shared by the connections (each builds one index at a time)."""
    for c in conns:
        await c.execute(f"SET maintenance_work_mem = '{INDEX_MEMORY}'")
        await c.execute(f"SET search_path TO {schema}")
    await _share(conns, statements)


async def _share(conns: list, statements: list[str]) -> None:
    """Run the statements, each once, on whichever connection is free next."""
    todo = list(statements)

    async def work(c) -> None:
        while todo:
            await c.execute(todo.pop(0))

    await run_all(work(c) for c in conns)


async def _analyze(conns: list) -> None:
    """ANALYZE every table of the database (what a plain ANALYZE covers), biggest first, shared by the
    connections."""
    rows = await conns[0].fetch(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' "
        "AND has_table_privilege(c.oid, 'SELECT') ORDER BY pg_table_size(c.oid) DESC, 1")
    await _share(conns, [f"ANALYZE {r[0]}" for r in rows])


async def _live_sequences(conn, schema: str) -> list[dict]:
    from migrator import schema_capture

    return list((await schema_capture.capture(conn, schema=schema)).sequences)


async def _summarise(conn, report: LoadReport) -> LoadReport:
    fixups = await ledger.fixup_counts(conn)
    for unit, p in sorted((await ledger.progress(conn)).items()):
        t = report.tables.setdefault(ledger.table_of(unit), {"rows": 0, "quarantined": 0, "fixups": 0,
                                                                 "batches": 0})
        t["rows"] += p.rows
        t["quarantined"] += p.quarantined
        t["fixups"] += fixups.get(unit, 0)
        t["batches"] += p.batches
    report.steps = await ledger.steps(conn)
    return report
