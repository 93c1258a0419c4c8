"""The PostgreSQL target: connecting with clear errors, inspecting its state, DDL, COPY, finalisation."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import ssl
from dataclasses import dataclass, field

import asyncpg

from migrator.catalog.schema import VECTOR_TABLE, qi
from migrator.errors import PreflightError, TransientError
from migrator.settings import mask_dsn

log = logging.getLogger(__name__)
# what losing the server looks like mid-load: the ledger has every committed batch, so `--resume` continues
TRANSIENT = (asyncpg.ConnectionDoesNotExistError, asyncpg.AdminShutdownError, asyncpg.CannotConnectNowError,
             asyncpg.InterfaceError, ConnectionError, OSError, asyncpg.exceptions.CrashShutdownError,
             asyncpg.exceptions.ConnectionFailureError)
MIN_SERVER_VERSION = 130000
SEED_TABLES = {"config", "alembic_version"}
# A pinned read (`catch-up --then-verify`): {database key: exported snapshot}. Every connection this process, or a
# worker process it spawns (the environment is inherited), opens to such a database reads that snapshot, in one
# read-only REPEATABLE READ transaction, whatever has been committed since.
PIN_ENV = "HRIDAAI_MIGRATE_PINNED_SNAPSHOTS"


async def connect(url: str, *, schema: str | None = None, readonly: bool = False,
                  bulk: bool = False) -> asyncpg.Connection:
    """Connect, turning driver errors into operator-facing ones (with the DSN masked).

    bulk=True: synchronous_commit off for batch transactions. Safe with the ledger: a batch and its ledger row are
    one transaction, and a server crash can only lose a suffix of commits, which resume redoes; the run's last
    transaction (finish_run) commits synchronously, flushing everything before it, so success is never reported
    for data a crash could still take away.
    """
    settings = {"application_name": "hridaai-migrate"}
    if bulk:
        settings["synchronous_commit"] = "off"
    if schema:
        settings["search_path"] = f"{qi(schema)}, public"
    if readonly:
        settings["default_transaction_read_only"] = "on"
    try:
        conn = await asyncpg.connect(url, server_settings=settings, timeout=30)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        raise PreflightError("the target refused the credentials", detail=f"{mask_dsn(url)}: {exc}",
                             hint="check the user and password in DATABASE_URL / --target") from None
    except asyncpg.InvalidCatalogNameError as exc:
        raise PreflightError("the target database does not exist", detail=f"{mask_dsn(url)}: {exc}",
                             hint="create it first (CREATE DATABASE ...) or fix the database name in the URL") from None
    except ssl.SSLError as exc:  # before OSError: a certificate problem is configuration, a retry cannot fix it
        raise PreflightError("the TLS handshake with the target failed", detail=f"{mask_dsn(url)}: {exc}",
                             hint="with sslmode=verify-full the sslrootcert CA file must have signed the server's "
                                  "certificate and the URL's host must be a name in it (verify-ca skips the name)"
                             ) from None
    except (OSError, socket.gaierror, asyncio.TimeoutError, asyncpg.CannotConnectNowError) as exc:
        raise TransientError("cannot reach the target PostgreSQL server",
                             detail=f"{mask_dsn(url)}: {exc.__class__.__name__}: {exc}",
                             hint="check host, port and network; `migrate run --resume` continues once it is up"
                             ) from None
    except asyncpg.PostgresError as exc:
        raise PreflightError("the target refused the connection", detail=f"{mask_dsn(url)}: {exc}") from None
    if bulk:
        await use_lz4_if_available(conn)
    pinned = json.loads(os.environ.get(PIN_ENV) or "{}").get(database_key(url))
    if pinned:
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        await conn.execute(f"SET TRANSACTION SNAPSHOT '{pinned}'")
    return conn


def database_key(url: str) -> str:
    """Which database a URL reaches, without its secrets (two URLs to one database may differ in credentials)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return hashlib.sha256(f"{parts.hostname}|{parts.port}|{parts.path}|{parts.query}".encode()).hexdigest()[:16]


@contextlib.asynccontextmanager
async def pinned(urls: list[str]):
    """Export a snapshot of each database in `urls` and pin every connection opened meanwhile (here or in spawned
    workers) to it; the exporting transactions stay open until the block ends."""
    holders, pins = [], {}
    try:
        for url in urls:
            key = database_key(url)
            if key in pins:
                continue
            conn = await connect(url)
            holders.append(conn)
            await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            pins[key] = await conn.fetchval("SELECT pg_export_snapshot()")
        os.environ[PIN_ENV] = json.dumps(pins)
        yield pins
    finally:
        os.environ.pop(PIN_ENV, None)
        for conn in holders:
            await close_quietly(conn)


async def use_lz4_if_available(conn: asyncpg.Connection) -> bool:
    """SET default_toast_compression = lz4 for this session when the server has it (no schema change: new values
    are compressed with lz4, which PostgreSQL >= 14 reads transparently; HridaAI sees no difference)."""
    if await _has_lz4(conn):
        await conn.execute("SET default_toast_compression = lz4")
        return True
    return False


@dataclass
class TargetState:
    server_version: int
    server_version_text: str
    schema: str
    hridaai_tables: list[str] = field(default_factory=list)
    revision: str | None = None
    rows: dict[str, int] = field(default_factory=dict)
    has_ledger: bool = False
    can_create: bool = True
    vector_available: bool = False
    vector_installed: bool = False
    lz4: bool = False

    @property
    def kind(self) -> str:
        """empty / hridaai-seeded / hridaai-with-data / foreign."""
        if not self.hridaai_tables:
            return "empty"
        data = {t: n for t, n in self.rows.items() if n and t not in SEED_TABLES}
        return "hridaai-with-data" if data else "hridaai-seeded"

    def describe(self) -> str:
        """One line for people."""
        if self.kind == "empty":
            return "empty (no HridaAI tables)"
        at = f"made by HridaAI at revision {self.revision}" if self.revision else "HridaAI tables, no alembic revision"
        data = {t: n for t, n in self.rows.items() if n and t not in SEED_TABLES}
        return at + (f"; holds data in {len(data)} tables" if data else "; only HridaAI's seed rows")


async def inspect(conn: asyncpg.Connection, *, schema: str, known_tables: set[str]) -> TargetState:
    """Measure what the target holds, read-only."""
    version = int(await conn.fetchval("SHOW server_version_num"))
    state = TargetState(version, await conn.fetchval("SHOW server_version"), schema)
    names = {r[0] for r in await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)}
    state.hridaai_tables = sorted(names & (known_tables | {"alembic_version"}) - {VECTOR_TABLE})
    for t in state.hridaai_tables:
        state.rows[t] = await conn.fetchval(f"SELECT count(*) FROM {qi(schema)}.{qi(t)}")
    if "alembic_version" in names:
        revs = await conn.fetch(f"SELECT version_num FROM {qi(schema)}.alembic_version")
        state.revision = revs[0][0] if len(revs) == 1 else None
    state.can_create = bool(await conn.fetchval(
        "SELECT has_database_privilege(current_database(), 'CREATE') AND "
        "(NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) OR has_schema_privilege($1, 'CREATE'))",
        schema))
    state.vector_available = bool(await conn.fetchval(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"))
    state.vector_installed = bool(await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'vector'"))
    state.lz4 = await _has_lz4(conn)
    return state


async def _has_lz4(conn: asyncpg.Connection) -> bool:
    """Whether this server was built with lz4 (SET default_toast_compression = lz4 works)."""
    if int(await conn.fetchval("SHOW server_version_num")) < 140000:
        return False
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL default_toast_compression = lz4")
        return True
    except asyncpg.PostgresError:
        return False


async def column_types(conn: asyncpg.Connection, schema: str) -> dict[str, dict[str, tuple[str, bool, bool]]]:
    """Live target: table -> column -> (format_type, nullable, has_default)."""
    rows = await conn.fetch(
        """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, a.atthasdef
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY c.relname, a.attnum""", schema)
    out: dict[str, dict[str, tuple[str, bool, bool]]] = {}
    for rel, col, typ, nullable, hasdef in rows:
        out.setdefault(rel, {})[col] = (typ, nullable, hasdef)
    return out


async def copy_rows(conn: asyncpg.Connection, *, schema: str, table: str, columns: list[str],
                    rows: list[tuple]) -> None:
    """Binary COPY of converted rows, by column name."""
    await conn.copy_records_to_table(table, records=rows, columns=columns, schema_name=schema)


async def reset_sequences(conn: asyncpg.Connection, sequences: list[dict], schema: str) -> list[dict]:
    """setval() every owned sequence to the max of its column (is_called only when rows exist)."""
    done = []
    for s in sequences:
        if not s.get("table"):
            continue
        top = await conn.fetchval(f"SELECT max({qi(s['column'])}) FROM {qi(schema)}.{qi(s['table'])}")
        value, called = (top, True) if top is not None else (1, False)
        await conn.execute("SELECT setval($1::regclass, $2, $3)", f"{qi(schema)}.{qi(s['name'])}", value, called)
        done.append({"sequence": s["name"], "value": value, "is_called": called})
    return done


def lost_connection(exc: Exception, *, closed: bool = False, where: str = "during the load") -> TransientError | None:
    """The operator-facing error for losing the target (exit 75): `exc` is a transient error, or a connection it
    came through is `closed`; None otherwise."""
    if not (closed or isinstance(exc, TRANSIENT)):
        return None
    return TransientError(f"lost the connection to the target {where}", detail=f"{exc.__class__.__name__}: {exc}",
                          hint="everything committed is in the ledger; `migrate run --resume` continues")


async def close_quietly(conn: asyncpg.Connection) -> None:
    """Close, waiting at most 5 s; a connection already gone is simply dropped."""
    try:
        await asyncio.wait_for(conn.close(), 5)
    except Exception:  # the connection may already be gone; nothing to release
        conn.terminate()
