"""The ingest ceiling of issue 18 (``python -m bench``): every migrated table loaded with ``psql \\copy``.

After the first ``migrate run``, each ordinary table of the migrated target's ``public`` schema (``document_chunk``
included) is dumped to a file with ``psql \\copy ... TO`` (text format; not timed), an index-free copy of it is made
(``CREATE TABLE bench_ingest.x (LIKE public.x)``: columns, types and NOT NULL only; no key, index, default or
constraint; not timed), a ``CHECKPOINT`` is taken, and then one ``psql`` process loads every file into its copy with
``\\copy ... FROM`` over its one connection: that process's wall time is the ceiling (psql's own ``\\timing`` gives
each table's part). The copies and the files are removed afterwards.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import asyncpg

SCHEMA = "bench_ingest"  # where the index-free copies go, in the migrated database itself
SOURCE_SCHEMA = "public"  # where migrate puts HridaAI's tables (and document_chunk)
TABLES_SQL = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY c.relname
"""
_COPY = re.compile(r"^COPY (\d+)$")
_TIME = re.compile(r"^Time: ([0-9.]+) ms")


def psql_path() -> str:
    """The embedded server's psql (``pgserver_ctl.bin_dir()``), else the one on PATH."""
    try:
        from bench import pgserver_ctl

        local = pgserver_ctl.bin_dir() / "psql"
        if local.exists():
            return str(local)
    except Exception:  # no embedded server wheel (--target): PATH's psql will do
        pass
    found = shutil.which("psql")
    if not found:
        raise RuntimeError("no psql: neither the embedded server's bin dir nor PATH has one")
    return found


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _file(folder: Path, i: int) -> str:
    """The i-th table's dump file, as a psql string literal."""
    return "'" + str(folder / f"{i:04d}.copy").replace("'", "''") + "'"


def dump_script(tables: list[str], folder: Path) -> str:
    """psql commands writing every table of ``public`` to its file (text format)."""
    return "".join(f"\\copy {SOURCE_SCHEMA}.{ident(t)} TO {_file(folder, i)}\n" for i, t in enumerate(tables))


def load_script(tables: list[str], folder: Path) -> str:
    """psql commands loading every file into its index-free copy, each timed by psql."""
    return "\\timing on\n" + "".join(f"\\copy {SCHEMA}.{ident(t)} FROM {_file(folder, i)}\n"
                                     for i, t in enumerate(tables))


def parse_load_output(text: str, tables: list[str]) -> dict[str, dict]:
    """{table: {"rows", "seconds"}} from psql's ``COPY n`` / ``Time: x ms`` lines, which come in the script's order."""
    rows = [int(m.group(1)) for m in map(_COPY.match, text.splitlines()) if m]
    secs = [float(m.group(1)) / 1000 for m in map(_TIME.match, text.splitlines()) if m]
    if len(rows) != len(tables) or len(secs) != len(tables):
        raise ValueError(f"psql reported {len(rows)} COPY and {len(secs)} Time lines for {len(tables)} tables")
    return {t: {"rows": r, "seconds": s} for t, r, s in zip(tables, rows, secs)}


def _psql(psql: str, dsn: str, script: str) -> tuple[float, str]:
    """Run ``script`` in one psql session (stops at the first error); its wall seconds and output."""
    t0 = time.perf_counter()
    r = subprocess.run([psql, dsn, "-X", "-v", "ON_ERROR_STOP=1"], input=script, capture_output=True, text=True,
                       check=False)
    seconds = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(f"psql exited {r.returncode}: {r.stderr.strip()[-2000:]}")
    return seconds, r.stdout


async def _tables(dsn: str) -> list[str]:
    """The ordinary tables of the migrated schema."""
    con = await asyncpg.connect(dsn)
    try:
        return [r[0] for r in await con.fetch(TABLES_SQL, SOURCE_SCHEMA)]
    finally:
        await con.close()


async def _execute(dsn: str, *statements: str) -> None:
    """Run statements in order on one connection (autocommit: CHECKPOINT may be among them)."""
    con = await asyncpg.connect(dsn)
    try:
        for sql in statements:
            await con.execute(sql)
    finally:
        await con.close()


async def ceiling(dsn: str, folder: Path, log) -> dict:
    """Dump, copy, load (timed), clean up; seconds (psql's wall time), rows, file bytes, per-table figures."""
    psql = psql_path()
    tables = await _tables(dsn)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        dump_s, _ = await asyncio.to_thread(_psql, psql, dsn, dump_script(tables, folder))
        sizes = [(folder / f"{i:04d}.copy").stat().st_size for i in range(len(tables))]
        log(f"ingest ceiling: {len(tables)} tables dumped in {dump_s:.1f} s ({sum(sizes) / 1e6:,.0f} MB of text), "
            f"loading them into index-free copies with psql \\copy, one connection")
        await _execute(dsn, f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE", f"CREATE SCHEMA {SCHEMA}",
                       *(f"CREATE TABLE {SCHEMA}.{ident(t)} (LIKE {SOURCE_SCHEMA}.{ident(t)})" for t in tables),
                       "CHECKPOINT")
        await asyncio.to_thread(os.sync)  # the dump files' pages written before the timed load, as before a run
        seconds, out = await asyncio.to_thread(_psql, psql, dsn, load_script(tables, folder))
        per = parse_load_output(out, tables)
        for t, size in zip(tables, sizes):
            per[t]["bytes"] = size
        await _execute(dsn, f"DROP SCHEMA {SCHEMA} CASCADE")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rows = sum(p["rows"] for p in per.values())
    log(f"ingest ceiling: {rows:,} rows in {seconds:.1f} s")
    return {"seconds": seconds, "rows": rows, "bytes": sum(sizes), "tables": per, "dump_s": dump_s, "psql": psql}
