"""PostgreSQL helpers for the benchmark: embedded server, per-run databases, baseline DDL."""
from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

# Column types as in tests/data/pg-schema-0bd252b206fb.sql (json stays json, booleans boolean,
# timestamps bigint); PRIMARY KEY included because the migrated target has it too.
TARGET_DDL = {
    "chat": """CREATE TABLE chat (
        id character varying NOT NULL PRIMARY KEY, user_id character varying, title text, created_at bigint,
        updated_at bigint, share_id text, archived boolean, chat json, pinned boolean,
        meta json DEFAULT '{}'::json NOT NULL, folder_id text, tasks json, summary text, last_read_at bigint,
        current_message_id text, variables json, timer_at bigint)""",
    "chat_message": """CREATE TABLE chat_message (
        id text NOT NULL PRIMARY KEY, chat_id text NOT NULL, user_id text, role text NOT NULL, parent_id text,
        content json, output json, model_id text, files json, sources json, embeds json, done boolean,
        status_history json, error json, usage json, created_at bigint, updated_at bigint, context_summary text,
        meta json)""",
    "message": """CREATE TABLE message (
        id text NOT NULL PRIMARY KEY, user_id text, channel_id text, content text, data json, meta json,
        created_at bigint, updated_at bigint, parent_id text, reply_to_id text,
        is_pinned boolean DEFAULT false NOT NULL, pinned_at bigint, pinned_by text, app_id text)""",
}
BENCH_TABLES = tuple(TARGET_DDL)


@contextlib.contextmanager
def embedded_server(log=print):
    """Start a throw-away embedded PostgreSQL; yield its admin URI; stop it and delete its files afterwards."""
    from migrator import embedded  # imported lazily: not needed with --target

    pgdata = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    srv = embedded.get_server(pgdata, cleanup_mode="stop")
    log(f"postgres: embedded server ({embedded.PACKAGE}) in {pgdata}")
    try:
        yield srv.get_uri()
    finally:
        with contextlib.suppress(Exception):
            srv.cleanup()
        import shutil
        shutil.rmtree(pgdata, ignore_errors=True)


def with_database(dsn: str, dbname: str) -> str:
    """Return ``dsn`` (a postgresql:// URI) pointing at database ``dbname`` instead."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"--target must be a postgresql:// URI, got {parts.scheme!r}")
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def mask(dsn: str) -> str:
    """Hide the password of a URI for printing."""
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return dsn


async def recreate_database(admin_dsn: str, dbname: str) -> str:
    """Drop (if present) and create database ``dbname``; return its URI."""
    con = await asyncpg.connect(admin_dsn)
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await con.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        await con.close()
    return with_database(admin_dsn, dbname)


async def settle(admin_dsn: str) -> None:
    """A CHECKPOINT, then the OS's dirty pages written (sync): a timed step starts without paying for the writes of
    the step before it (a previous run's data, the ceiling's dump files)."""
    con = await asyncpg.connect(admin_dsn)
    try:
        await con.execute("CHECKPOINT")
    finally:
        await con.close()
    await asyncio.to_thread(os.sync)


async def drop_database(admin_dsn: str, dbname: str) -> None:
    """Drop database ``dbname`` if it exists (terminating leftover sessions)."""
    con = await asyncpg.connect(admin_dsn)
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    finally:
        await con.close()


async def server_info(dsn: str) -> dict:
    """Version, lz4 availability and a few settings that explain the numbers."""
    con = await asyncpg.connect(dsn)
    try:
        settings = dict(await con.fetch(
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
            ["shared_buffers", "max_wal_size", "synchronous_commit", "fsync", "default_toast_compression"]))
        return {"version": await con.fetchval("SHOW server_version"),
                "lz4": await supports_lz4(con), "settings": settings}
    finally:
        await con.close()


async def supports_lz4(con) -> bool:
    """True when the server was built with lz4, so ``SET default_toast_compression = lz4`` is accepted."""
    vals = await con.fetchval("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
    return "lz4" in (vals or [])


async def reset_tables(con, tables=BENCH_TABLES) -> None:
    """(Re)create empty baseline target tables in the connected database."""
    for t in tables:
        await con.execute(f"DROP TABLE IF EXISTS {t}")
        await con.execute(TARGET_DDL[t])


async def copy_batches(cons: list, table: str, columns: list[str], batches) -> None:
    """COPY every batch (a list of records) into ``table`` over the connections ``cons``, each taking the next batch
    until none is left (the caller times it, and opens and closes the connections)."""
    queue: asyncio.Queue = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)

    async def worker(con):
        while not queue.empty():
            await con.copy_records_to_table(table, records=queue.get_nowait(), columns=columns)

    await asyncio.gather(*(worker(c) for c in cons))
