"""The start of a load: the target is ours (the lock, no writer of a killed run left), then either the recorded
run is continued, or the schema, the ledger and the run are created in one transaction."""

from __future__ import annotations

import uuid

import asyncpg

from migrator import ledger
from migrator.catalog import schema as cat
from migrator.context import RunContext
from migrator.errors import PreflightError
from migrator.load.split import Part

# a killed run's worker session ends once its backend notices the client is gone: after the statement it is in,
# which on a busy server (one huge chat compressing) can take a while
WRITERS_WAIT = 30  # seconds


async def claim(conn: asyncpg.Connection) -> None:
    """The migration lock, and no load worker of an earlier (killed) run still able to commit."""
    await ledger.lock(conn, "this target")
    if not await ledger.writers_gone(conn, timeout=WRITERS_WAIT):
        raise PreflightError("load workers of an earlier run are still connected to the target",
                             detail="sessions: SELECT pid, backend_start, state FROM pg_stat_activity "
                                    "WHERE application_name = 'hridaai-migrate'",
                             hint="they stop after their current batch once their run is gone; if they stay, end "
                                  "them with pg_terminate_backend(pid), then run `migrate run --resume`")


async def begin(ctx: RunContext, conn: asyncpg.Connection, parts: dict[str, list[Part]], *,
                resume: bool) -> tuple[dict, bool]:
    """(the run, resumed?): continue the recorded run, or create schema + ledger + run in one transaction.

    Raises PreflightError (exit 4): another snapshot's ledger, an unfinished run without --resume, a plan with
    error-level checks."""
    plan, snapshot = ctx.plan, ctx.snapshot
    run = await ledger.current_run(conn)
    if run is not None:
        _may_continue(run, snapshot.snapshot_id, resume=resume)
        return run, True
    if plan.errors:
        raise plan.refusal()
    run_id = uuid.uuid4().hex[:12]
    mode = "existing" if plan.mode.startswith("existing") else "create"
    ctx.progress.event("schema", state="start", mode=mode)
    async with conn.transaction():
        await ledger.ensure(conn)
        await _prepare_schema(ctx, conn, mode)
        units = [(p.unit, "table", p.rows, p.bytes) for ps in parts.values() for p in ps]
        units += [(t.name, "table", 0, 0) for t in plan.tables
                  if t.action in ("load", "quarantine") and t.name not in parts]
        await ledger.start_run(conn, run_id=run_id, snapshot_id=snapshot.snapshot_id, mode=mode,
                               revision=plan.source_revision, units=units)
        await ledger.step_done(conn, "schema", snapshot.snapshot_id, mode)
        await ledger.step_done(conn, "policies", snapshot.snapshot_id, ledger.dumps(plan.policies))
    return {"run_id": run_id, "mode": mode, "snapshot_id": snapshot.snapshot_id, "state": "loading"}, False


def _may_continue(run: dict, snapshot_id: str, *, resume: bool) -> None:
    if run["snapshot_id"] != snapshot_id:
        raise PreflightError("the target's ledger was made from another snapshot",
                             detail=f"ledger: {run['snapshot_id']}, this snapshot: {snapshot_id}",
                             hint="resume with the snapshot that run used (same --work-dir), or migrate into "
                                  "an empty database")
    if run["state"] != "done" and not resume:
        raise PreflightError(f"an unfinished run ({run['run_id']}) is recorded in the target",
                             hint="continue it with `migrate run --resume`")
    if run["state"] == "done" and not resume:
        raise PreflightError("this target already holds a completed migration of this snapshot",
                             hint="check it with `migrate verify`; `migrate run --resume` is a no-op")


async def _prepare_schema(ctx: RunContext, conn: asyncpg.Connection, mode: str) -> None:
    plan = ctx.plan
    schema = cat.qi(plan.schema)
    if mode == "create":
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(f"SET LOCAL search_path TO {schema}")
        for stmt in cat.create_statements(cat.for_revision(plan.source_revision)):
            await conn.execute(stmt)
        return
    present = {t.name for t in plan.tables if t.action in ("load", "stamp", "absent")}
    if ctx.settings.force_clear:
        names = ", ".join(f"{schema}.{cat.qi(n)}" for n in sorted(present - {"alembic_version"}))
        await conn.execute(f"TRUNCATE {names} CASCADE")
    elif "config" in present:
        await conn.execute(f"DELETE FROM {schema}.config")  # HridaAI's first-start seed rows
