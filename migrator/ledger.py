"""The batch ledger, in the target (schema hridaai_migrate), written in the same transaction as the data.

Exactly once by construction: a batch's rows, its quarantined rows, its fixups and its ledger row commit together
or not at all; resume continues after the last committed batch of each unit. Values that may hold NUL or lone
surrogates are stored as ASCII JSON text (json.dumps escapes them), never as json/jsonb.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg

from migrator.catalog.schema import OWN_SCHEMA, qi
from migrator.convert.keys import dumps  # noqa: F401  (the ledger's text form; callers use ledger.dumps)
from migrator.errors import PreflightError

SCHEMA = qi(OWN_SCHEMA)  # the ledger's schema, quoted: every statement on it is in this module
UNIT_SEP = "#"  # a table's parts are the units `chat`, `chat#2`, ...
VECTOR_PREFIX = "vector:"  # a collection's unit is `vector:<name>`
LOCK_KEY = 0x48524944  # "HRID": one migration at a time per target database
LOCK_WAIT = 5  # seconds
WRITERS_KEY = 0x48524957  # "HRIW": held (shared) by every load worker process while it may commit batches

DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.run (
        run_id text PRIMARY KEY, snapshot_id text NOT NULL, mode text NOT NULL, source_revision text,
        started_at timestamptz NOT NULL DEFAULT now(), finished_at timestamptz, state text NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.unit (
        unit text PRIMARY KEY, kind text NOT NULL, total_rows bigint NOT NULL, total_bytes bigint NOT NULL,
        done boolean NOT NULL DEFAULT false)""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.batch (
        unit text NOT NULL, batch_no integer NOT NULL, snapshot_id text NOT NULL, first_key bigint NOT NULL,
        last_key bigint NOT NULL, rows integer NOT NULL, quarantined integer NOT NULL, bytes bigint NOT NULL,
        fixups integer NOT NULL, committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (unit, batch_no))""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.step (
        name text PRIMARY KEY, snapshot_id text NOT NULL, detail text, done_at timestamptz NOT NULL DEFAULT now())""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.quarantine (
        unit text NOT NULL, key text NOT NULL, reason text NOT NULL, policy text NOT NULL, column_name text,
        row_json text NOT NULL, batch_no integer NOT NULL, PRIMARY KEY (unit, key, batch_no))""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.fixup (
        unit text NOT NULL, key text NOT NULL, column_name text NOT NULL, policy text NOT NULL, action text NOT NULL,
        original text, batch_no integer NOT NULL)""",
    # an upload moved to object storage (`migrate files`): the row's path column now holds `uri`, committed with it
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.object (
        table_name text NOT NULL, key text NOT NULL, column_name text NOT NULL, original text NOT NULL,
        uri text NOT NULL, size bigint NOT NULL, sha256 text NOT NULL,
        committed_at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (table_name, key, column_name))""",
]


@dataclass(frozen=True)
class UnitProgress:
    batches: int
    last_key: int
    rows: int
    quarantined: int
    last_commit: Any = None


async def ensure(conn: asyncpg.Connection) -> None:
    """Create the ledger schema and tables if missing (idempotent)."""
    for stmt in DDL:
        await conn.execute(stmt)


async def exists(conn: asyncpg.Connection) -> bool:
    """Whether this target has a ledger at all."""
    return bool(await conn.fetchval(
        "SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'run'", OWN_SCHEMA))


async def current_run(conn: asyncpg.Connection) -> dict | None:
    """The latest run recorded in the target, or None."""
    if not await exists(conn):
        return None
    row = await conn.fetchrow(f"SELECT * FROM {SCHEMA}.run ORDER BY started_at DESC LIMIT 1")
    return dict(row) if row else None


async def start_run(conn: asyncpg.Connection, *, run_id: str, snapshot_id: str, mode: str,
                    revision: str | None, units: list[tuple[str, str, int, int]]) -> None:
    """Record a new run and its units (call inside the transaction that creates the schema)."""
    await conn.execute(f"INSERT INTO {SCHEMA}.run (run_id, snapshot_id, mode, source_revision, state) "
                       "VALUES ($1, $2, $3, $4, 'loading')", run_id, snapshot_id, mode, revision)
    await conn.executemany(f"INSERT INTO {SCHEMA}.unit (unit, kind, total_rows, total_bytes) VALUES ($1, $2, $3, $4) "
                           "ON CONFLICT (unit) DO NOTHING", units)


async def add_units(conn: asyncpg.Connection, units: list[tuple[str, str, int, int]]) -> None:
    """Register units that a later stage loads (e.g. vector collections)."""
    await conn.executemany(f"INSERT INTO {SCHEMA}.unit (unit, kind, total_rows, total_bytes) VALUES ($1, $2, $3, $4) "
                           "ON CONFLICT (unit) DO NOTHING", units)


async def progress(conn: asyncpg.Connection, unit: str | None = None) -> dict[str, UnitProgress]:
    """unit -> what has been committed so far (of every unit, or of `unit` only)."""
    where, args = _only(unit)
    rows = await conn.fetch(
        f"SELECT unit, count(*) AS batches, max(last_key) AS last_key, sum(rows) AS rows, "
        f"sum(quarantined) AS q, max(committed_at) AS at FROM {SCHEMA}.batch {where} GROUP BY unit", *args)
    return {r["unit"]: UnitProgress(r["batches"], r["last_key"], r["rows"], r["q"], r["at"]) for r in rows}


async def units(conn: asyncpg.Connection, unit: str | None = None) -> list[dict]:
    """Registered units with their totals (every unit, or `unit` only)."""
    where, args = _only(unit)
    return [dict(r) for r in await conn.fetch(f"SELECT * FROM {SCHEMA}.unit {where} ORDER BY unit", *args)]


def _only(unit: str | None) -> tuple[str, list]:
    return ("WHERE unit = $1", [unit]) if unit is not None else ("", [])


async def record_batch(conn: asyncpg.Connection, *, unit: str, batch_no: int, snapshot_id: str, first_key: int,
                       last_key: int, rows: int, nbytes: int, quarantine: list[tuple], fixups: list[tuple]) -> None:
    """Write the batch's ledger row, quarantined rows and fixups (inside the batch's transaction)."""
    await _row_records(conn, unit, batch_no, quarantine, fixups)
    await conn.execute(
        f"INSERT INTO {SCHEMA}.batch (unit, batch_no, snapshot_id, first_key, last_key, rows, quarantined, bytes, fixups) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        unit, batch_no, snapshot_id, first_key, last_key, rows, len(quarantine), nbytes, len(fixups))


@dataclass(frozen=True)
class WholeUnit:
    """A unit loaded in one batch (batch 1, keys 0 .. last_key) and done with it: a small collection of a group."""

    unit: str
    last_key: int
    rows: int
    nbytes: int
    quarantine: list[tuple]
    fixups: list[tuple]


async def _row_records(conn: asyncpg.Connection, unit: str, batch_no: int, quarantine: list[tuple],
                       fixups: list[tuple]) -> None:
    if quarantine:
        await conn.copy_records_to_table("quarantine", schema_name=OWN_SCHEMA, records=[
            (unit, key, reason, policy, column, row_json, batch_no)
            for key, reason, policy, column, row_json in quarantine],
            columns=["unit", "key", "reason", "policy", "column_name", "row_json", "batch_no"])
    if fixups:
        await conn.copy_records_to_table("fixup", schema_name=OWN_SCHEMA, records=[
            (unit, key, column, policy, action, original, batch_no)
            for key, column, policy, action, original in fixups],
            columns=["unit", "key", "column_name", "policy", "action", "original", "batch_no"])


async def record_whole_units(conn: asyncpg.Connection, snapshot_id: str, units: list[WholeUnit]) -> None:
    """Ledger rows, quarantined rows and fixups of units each loaded whole in the caller's transaction (one COPY for
    many small units), and the units marked done: a handful of round trips for any number of units."""
    quarantine = [(u.unit, key, reason, policy, column, row_json, 1)
                  for u in units for key, reason, policy, column, row_json in u.quarantine]
    if quarantine:
        await conn.copy_records_to_table("quarantine", schema_name=OWN_SCHEMA, records=quarantine, columns=[
            "unit", "key", "reason", "policy", "column_name", "row_json", "batch_no"])
    fixups = [(u.unit, key, column, policy, action, original, 1)
              for u in units for key, column, policy, action, original in u.fixups]
    if fixups:
        await conn.copy_records_to_table("fixup", schema_name=OWN_SCHEMA, records=fixups, columns=[
            "unit", "key", "column_name", "policy", "action", "original", "batch_no"])
    await conn.executemany(
        f"INSERT INTO {SCHEMA}.batch (unit, batch_no, snapshot_id, first_key, last_key, rows, quarantined, bytes, fixups) "
        "VALUES ($1, 1, $2, 0, $3, $4, $5, $6, $7)",
        [(u.unit, snapshot_id, u.last_key, u.rows, len(u.quarantine), u.nbytes, len(u.fixups)) for u in units])
    await conn.execute(f"UPDATE {SCHEMA}.unit SET done = true WHERE unit = ANY($1::text[])", [u.unit for u in units])


async def mark_unit_done(conn: asyncpg.Connection, unit: str) -> None:
    """A unit whose every batch is committed."""
    await conn.execute(f"UPDATE {SCHEMA}.unit SET done = true WHERE unit = $1", unit)


async def steps(conn: asyncpg.Connection) -> dict[str, str]:
    """Completed one-off steps (schema, indexes, sequences, alembic, analyze)."""
    return {r[0]: r[1] for r in await conn.fetch(f"SELECT name, detail FROM {SCHEMA}.step")}


async def step_done(conn: asyncpg.Connection, name: str, snapshot_id: str, detail: str | None = None) -> None:
    """Record a completed step (inside the step's own transaction when it has one)."""
    await conn.execute(f"INSERT INTO {SCHEMA}.step (name, snapshot_id, detail) VALUES ($1, $2, $3) "
                       "ON CONFLICT (name) DO UPDATE SET detail = EXCLUDED.detail, done_at = now()",
                       name, snapshot_id, detail)


async def finish_run(conn: asyncpg.Connection, run_id: str) -> None:
    """The run is complete (committed synchronously: this flushes every asynchronous batch commit before it)."""
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = on")
        await conn.execute(f"UPDATE {SCHEMA}.run SET state = 'done', finished_at = now() WHERE run_id = $1", run_id)


async def quarantined(conn: asyncpg.Connection) -> list[dict]:
    """Every quarantined row (unit, key, reason, policy, column_name, row_json)."""
    return [dict(r) for r in await conn.fetch(
        f"SELECT unit, key, reason, policy, column_name, row_json FROM {SCHEMA}.quarantine ORDER BY unit, key")]


async def fixups(conn: asyncpg.Connection) -> list[dict]:
    """Every fixup applied."""
    return [dict(r) for r in await conn.fetch(
        f"SELECT unit, key, column_name, policy, action, original FROM {SCHEMA}.fixup ORDER BY unit, key, column_name")]


async def replace_row_records(conn: asyncpg.Connection, table: str, keys: list[str], quarantine: list[tuple],
                              fixups: list[tuple]) -> None:
    """A catch-up rewrote (or removed) the rows `keys` of `table`: their quarantine rows and fixups, from every part of
    the table, are replaced by these (recorded under the table's first unit, batch 0)."""
    if keys:
        for what in ("quarantine", "fixup"):
            await conn.execute(f"DELETE FROM {SCHEMA}.{what} WHERE split_part(unit, $2, 1) = $1 "
                               "AND key = ANY($3::text[])", table, UNIT_SEP, keys)
        # a rewritten row holds the source's path again (`migrate files` moves it once more)
        await conn.execute(f"DELETE FROM {SCHEMA}.object WHERE table_name = $1 AND key = ANY($2::text[])", table, keys)
    await _row_records(conn, table, 0, quarantine, fixups)


async def forget_unit_records(conn: asyncpg.Connection, unit: str, keys: list[str] | None = None) -> None:
    """Remove the quarantine rows and fixups of `unit` (only of `keys` when given): their rows are gone or
    rewritten."""
    for what in ("quarantine", "fixup"):
        if keys is None:
            await conn.execute(f"DELETE FROM {SCHEMA}.{what} WHERE unit = $1", unit)
        else:
            await conn.execute(f"DELETE FROM {SCHEMA}.{what} WHERE unit = $1 AND key = ANY($2::text[])", unit, keys)


async def record_unit_rows(conn: asyncpg.Connection, unit: str, quarantine: list[tuple], fixups: list[tuple]) -> None:
    """Quarantine rows and fixups of `unit` written outside its batches (a catch-up's, batch 0)."""
    await _row_records(conn, unit, 0, quarantine, fixups)


async def move_run(conn: asyncpg.Connection, run_id: str, snapshot_id: str) -> None:
    """The run's target now holds `snapshot_id` (a catch-up's last commit)."""
    await conn.execute(f"UPDATE {SCHEMA}.run SET snapshot_id = $2, finished_at = now() WHERE run_id = $1",
                       run_id, snapshot_id)


def table_of(unit: str) -> str:
    """The table a ledger unit belongs to (`chat#3` -> `chat`)."""
    return unit.split(UNIT_SEP, 1)[0]


async def quarantine_keys(conn: asyncpg.Connection, table: str) -> set[str]:
    """The keys quarantined from every part of `table` (nothing when there is no ledger)."""
    if not await exists(conn):
        return set()
    return {r[0] for r in await conn.fetch(f"SELECT key FROM {SCHEMA}.quarantine WHERE split_part(unit, $2, 1) = $1",
                                           table, UNIT_SEP)}


async def set_null_fixups(conn: asyncpg.Connection, table: str) -> dict[str, list[str]]:
    """key -> the columns of it that `orphan_set_null` set NULL, over every part of `table`."""
    if not await exists(conn):
        return {}
    out: dict[str, list[str]] = {}
    for key, column in await conn.fetch(f"SELECT key, column_name FROM {SCHEMA}.fixup WHERE split_part(unit, $2, 1) = $1 "
                                        "AND policy = 'orphan_set_null'", table, UNIT_SEP):
        out.setdefault(key, []).append(column)
    return out


async def record_object(conn: asyncpg.Connection, table: str, key: str, column: str, original: str, uri: str,
                        size: int, sha256: str) -> None:
    """The row `key` of `table` now holds `uri` in `column` instead of `original` (in the rewrite's transaction)."""
    await conn.execute(f"INSERT INTO {SCHEMA}.object (table_name, key, column_name, original, uri, size, sha256) "
                       "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (table_name, key, column_name) DO UPDATE SET "
                       "original = EXCLUDED.original, uri = EXCLUDED.uri, size = EXCLUDED.size, "
                       "sha256 = EXCLUDED.sha256, committed_at = clock_timestamp()",
                       table, key, column, original, uri, size, sha256)


async def objects(conn: asyncpg.Connection, table: str | None = None) -> list[dict]:
    """Every upload moved to object storage (of `table`), in key order."""
    if not await exists(conn):
        return []
    where, args = ("WHERE table_name = $1", [table]) if table else ("", [])
    return [dict(r) for r in await conn.fetch(
        f"SELECT table_name, key, column_name, original, uri, size, sha256 FROM {SCHEMA}.object {where} "
        "ORDER BY table_name, key", *args)]


async def source_overrides(conn: asyncpg.Connection, table: str) -> dict[str, dict[str, Any]]:
    """key -> {column: the value the target holds instead of the converted source's}: the columns `orphan_set_null`
    set NULL, and the paths `migrate files` rewrote to object storage URIs."""
    out: dict[str, dict[str, Any]] = {}
    for key, columns in (await set_null_fixups(conn, table)).items():
        out.setdefault(key, {}).update(dict.fromkeys(columns))
    for o in await objects(conn, table):
        out.setdefault(o["key"], {})[o["column_name"]] = o["uri"]
    return out


async def fixup_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """unit -> how many fixups it recorded."""
    return {r[0]: r[1] for r in await conn.fetch(f"SELECT unit, count(*) FROM {SCHEMA}.fixup GROUP BY unit")}


async def vector_quarantine(conn: asyncpg.Connection) -> list[tuple[str, str, str]]:
    """(unit, key, policy) of every quarantined vector chunk (nothing when there is no ledger)."""
    if not await exists(conn):
        return []
    return [tuple(r) for r in await conn.fetch(f"SELECT unit, key, policy FROM {SCHEMA}.quarantine WHERE unit LIKE $1",
                                               VECTOR_PREFIX + "%")]


async def try_lock(conn: asyncpg.Connection) -> bool:
    """Session advisory lock: two `migrate run` against one target never run at once."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY))


async def lock(conn: asyncpg.Connection, what: str) -> None:
    """The migration lock, waited for LOCK_WAIT seconds (the session of a killed run ends once the server notices);
    PreflightError (exit 4) when another run still holds it."""
    for _ in range(LOCK_WAIT * 4):
        if await try_lock(conn):
            return
        await asyncio.sleep(0.25)
    raise PreflightError(f"another `migrate run` is already working on {what} (it holds the migration lock)",
                         detail="sessions: SELECT pid, backend_start, state FROM pg_stat_activity "
                                "WHERE application_name = 'hridaai-migrate'",
                         hint="wait for it to finish (watch it with `migrate status`), then run `migrate run "
                              "--resume`; never run two migrations into one target at once")


async def hold_writer(conn: asyncpg.Connection) -> None:
    """A load worker's session: shared lock on WRITERS_KEY for as long as it lives (see writers_gone)."""
    await conn.execute("SELECT pg_advisory_lock_shared($1)", WRITERS_KEY)


async def writers_gone(conn: asyncpg.Connection, *, timeout: float) -> bool:
    """Wait until no worker of an earlier (killed) run can still commit: take and drop WRITERS_KEY exclusively.
    False when a worker session still holds it after `timeout` seconds."""
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{int(timeout * 1000)}ms'")
            await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITERS_KEY)
    except asyncpg.LockNotAvailableError:
        return False
    return True
