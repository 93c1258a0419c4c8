"""The end of a load: indexes (create mode), sequences, alembic_version, ANALYZE — each a ledgered, idempotent step
— and the report, measured from the ledger."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field

import asyncpg

from migrator import ledger
from migrator.catalog import schema as cat
from migrator.context import RunContext
from migrator.parallel import run_all
from migrator.targets import postgres as pgt

INDEX_MEMORY = "256MB"  # per index build, session only


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
        if (self.steps.get("vector-index") or "").startswith("rebuilt"):
            lines.append(f"vector index: {self.steps['vector-index']}")
        return "\n".join(lines)


async def finalize(ctx: RunContext, conn: asyncpg.Connection, workers: list, run: dict,
                   before_done: Awaitable | None = None) -> None:
    """Every step not yet recorded, then (once `before_done`, work running beside these steps, has ended) the run is
    marked done. `workers` share the index builds and ANALYZE."""
    plan, snapshot_id, progress = ctx.plan, ctx.snapshot.snapshot_id, ctx.progress
    steps = await ledger.steps(conn)
    schema = cat.qi(plan.schema)
    catalog = cat.for_revision(plan.source_revision) if run["mode"] == "create" else None
    if catalog is not None and "indexes" not in steps:
        progress.event("finalize", step="indexes")
        await _build_indexes(workers or [conn], schema, cat.index_statements(catalog))
        await ledger.step_done(conn, "indexes", snapshot_id)
    if "sequences" not in steps:
        progress.event("finalize", step="sequences")
        sequences = catalog.sequences if catalog else await _live_sequences(conn, plan.schema)
        async with conn.transaction():
            done = await pgt.reset_sequences(conn, list(sequences), plan.schema)
            await ledger.step_done(conn, "sequences", snapshot_id, ledger.dumps(done))
    if "alembic" not in steps:
        progress.event("finalize", step="alembic")
        async with conn.transaction():
            if run["mode"] == "create":
                await conn.execute(f"INSERT INTO {schema}.alembic_version (version_num) VALUES ($1)",
                                   plan.source_revision)
            await ledger.step_done(conn, "alembic", snapshot_id, plan.source_revision)
    progress.event("finalize", step="analyze")
    # document_chunk: analyzed by the vector lane before its index build (it would wait here for that build)
    await _analyze(workers or [conn], skip={"public.document_chunk"} if plan.vectors else set())
    await ledger.step_done(conn, "analyze", snapshot_id)
    if before_done is not None:
        await before_done
    await ledger.finish_run(conn, run["run_id"])
    progress.event("finalize", step="done")


async def summarise(conn: asyncpg.Connection, report: LoadReport) -> LoadReport:
    """Rows, quarantined rows, fixups and batches per table (its parts added up), and the steps done: what the
    ledger holds, not what this process believes it wrote."""
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


async def _analyze(conns: list, *, skip: set[str]) -> None:
    """ANALYZE every table of the database (what a plain ANALYZE covers) but `skip` (schema.table), biggest first,
    shared by the connections."""
    rows = await conns[0].fetch(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' "
        "AND has_table_privilege(c.oid, 'SELECT') ORDER BY pg_table_size(c.oid) DESC, 1")
    await _share(conns, [f"ANALYZE {r[0]}" for r in rows if r[0] not in skip])


async def _live_sequences(conn: asyncpg.Connection, schema: str) -> list[dict]:
    from migrator.catalog import capture as schema_capture

    return list((await schema_capture.capture(conn, schema=schema)).sequences)
