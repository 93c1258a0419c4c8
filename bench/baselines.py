"""Reference loads of the same rows into the same PostgreSQL server, to put the tool's numbers in context.

* ceiling   : rows already read and converted in memory (bool/int/str JSON text), asyncpg ``copy_records_to_table``
              from ``connections`` connections pulling byte-capped batches from one queue. Nothing a migrator does can
              beat this on the same server; reading SQLite is not timed.
* naive     : sqlite3 read + psycopg 3 ``executemany`` INSERT in batches of 500, one connection, commit per batch.
              Stops after ``budget_s`` seconds; the rate of the prefix it loaded stands for the table (``scaled``).
* row_by_row: one ``INSERT`` statement per row (psycopg 3 ``execute``), one transaction, on a small prefix.

All run against empty tables created from ``pgutil.TARGET_DDL`` in a scratch database.
"""
from __future__ import annotations

import asyncio
import sqlite3
import statistics
import time
from pathlib import Path

import asyncpg
import psycopg

from bench import cpu, pgutil, report
from bench.generate import payload_expr

BATCH_ROWS = 10_000
BATCH_BYTES = 16 << 20


async def target_columns(con, table: str) -> list[tuple[str, str]]:
    """(name, type) of the target table's columns, in order."""
    rows = await con.fetch(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum", table)
    return [(r[0], r[1]) for r in rows]


def read_rows(db_path: Path, table: str, cols: list[tuple[str, str]], limit: int | None = None) -> list[tuple]:
    """Read a table from SQLite as tuples converted for the target: 0/1 -> bool, everything else unchanged."""
    names = ", ".join(c for c, _ in cols)
    bool_idx = [i for i, (_, t) in enumerate(cols) if t == "boolean"]
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        sql = f'SELECT {names} FROM "{table}" ORDER BY rowid' + (f" LIMIT {int(limit)}" if limit else "")
        cur = con.execute(sql)
        if not bool_idx:
            return cur.fetchall()
        out = []
        for row in cur:
            row = list(row)
            for i in bool_idx:
                if row[i] is not None:
                    row[i] = bool(row[i])
            out.append(tuple(row))
        return out
    finally:
        con.close()


def prefix_bytes(db_path: Path, table: str, n: int) -> int:
    """Payload bytes of the first ``n`` rows (rowid order), measured like the dataset manifest."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        sub = f'(SELECT * FROM "{table}" ORDER BY rowid LIMIT {int(n)})'
        return con.execute(f"SELECT {payload_expr(con, table)} FROM {sub}").fetchone()[0] or 0
    finally:
        con.close()


def make_batches(rows: list[tuple]) -> list[list[tuple]]:
    """Split rows into batches capped at BATCH_ROWS rows and ~BATCH_BYTES of string payload."""
    batches, cur, size = [], [], 0
    for row in rows:
        cur.append(row)
        size += sum(len(v) for v in row if isinstance(v, str))
        if len(cur) >= BATCH_ROWS or size >= BATCH_BYTES:
            batches.append(cur)
            cur, size = [], 0
    if cur:
        batches.append(cur)
    return batches


async def _connect(dsn: str, lz4: bool):
    con = await asyncpg.connect(dsn)
    if lz4:
        await con.execute("SET default_toast_compression = lz4")
    return con


async def copy_once(dsn: str, table: str, names: list[str], batches, connections: int, lz4: bool) -> dict:
    """Load ``batches`` into an empty ``table`` with ``connections`` COPY connections; return the seconds, the
    machine's busy core-seconds and this (client) process's CPU seconds over the load."""
    admin = await asyncpg.connect(dsn)
    try:
        await pgutil.reset_tables(admin, (table,))
    finally:
        await admin.close()
    cons = [await _connect(dsn, lz4) for _ in range(connections)]
    try:
        busy0, own0, t0 = cpu.busy_core_s(), cpu.own_core_s(), time.perf_counter()
        await pgutil.copy_batches(cons, table, names, batches)
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "busy_core_s": cpu.delta(busy0, cpu.busy_core_s()),
                "client_core_s": cpu.own_core_s() - own0}
    finally:
        for c in cons:
            await c.close()


def _rates(rows: int, nbytes: int, seconds: float) -> dict:
    return {"rows_per_s": rows / seconds if seconds else None,
            "mb_per_s": nbytes / 1e6 / seconds if seconds else None}


async def ceiling(dsn: str, db_path: Path, table: str, nbytes: int, runs: int, connections: int,
                  lz4: bool) -> dict:
    """COPY ceiling for one table: median of ``runs`` loads of the in-memory rows."""
    con = await asyncpg.connect(dsn)
    try:
        await pgutil.reset_tables(con, (table,))
        cols = await target_columns(con, table)
    finally:
        await con.close()
    t0 = time.perf_counter()
    rows = read_rows(db_path, table, cols)
    read_s = time.perf_counter() - t0
    batches = make_batches(rows)
    loads = [await copy_once(dsn, table, [c for c, _ in cols], batches, connections, lz4) for _ in range(runs)]
    times = [x["seconds"] for x in loads]
    med = statistics.median(times)
    return {"rows": len(rows), "bytes": nbytes, "runs_s": [round(t, 3) for t in times], "seconds": med,
            "batches": len(batches), "connections": connections, "sqlite_read_s": round(read_s, 3),
            "busy_core_s": report.median(x["busy_core_s"] for x in loads),
            "client_core_s": statistics.median(x["client_core_s"] for x in loads),
            **_rates(len(rows), nbytes, med)}


def _insert_sql(table: str, names: list[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})"


def naive(dsn: str, db_path: Path, table: str, cols, total_rows: int, budget_s: float, batch: int = 500) -> dict:
    """sqlite3 + psycopg executemany(batch of 500), commit per batch, for at most ``budget_s`` seconds."""
    names = [c for c, _ in cols]
    bool_idx = [i for i, (_, t) in enumerate(cols) if t == "boolean"]
    sql = _insert_sql(table, names)
    src = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    done = 0
    with psycopg.connect(dsn) as pg:
        t0 = time.perf_counter()
        cur = src.execute(f'SELECT {", ".join(names)} FROM "{table}" ORDER BY rowid')
        while time.perf_counter() - t0 < budget_s:
            chunk = cur.fetchmany(batch)
            if not chunk:
                break
            if bool_idx:  # a naive script still has to turn 0/1 into booleans or PostgreSQL refuses them
                chunk = [tuple(bool(v) if i in bool_idx and v is not None else v for i, v in enumerate(r))
                         for r in chunk]
            with pg.cursor() as c:
                c.executemany(sql, chunk)
            pg.commit()
            done += len(chunk)
        seconds = time.perf_counter() - t0
    src.close()
    return _partial_result(db_path, table, done, total_rows, seconds, batch=batch)


def row_by_row(dsn: str, db_path: Path, table: str, cols, total_rows: int, limit: int, budget_s: float) -> dict:
    """One INSERT per row (psycopg execute) in a single transaction, on the first ``limit`` rows."""
    names = [c for c, _ in cols]
    rows = read_rows(db_path, table, cols, limit=limit)
    sql = _insert_sql(table, names)
    done = 0
    with psycopg.connect(dsn) as pg:
        t0 = time.perf_counter()
        with pg.cursor() as c:
            for row in rows:
                c.execute(sql, row)
                done += 1
                if time.perf_counter() - t0 > budget_s:
                    break
        pg.commit()
        seconds = time.perf_counter() - t0
    return _partial_result(db_path, table, done, total_rows, seconds)


def _partial_result(db_path, table, done, total_rows, seconds, **extra) -> dict:
    nbytes = prefix_bytes(db_path, table, done)
    return {"rows_loaded": done, "rows": total_rows, "bytes_loaded": nbytes, "seconds": seconds,
            "scaled": done < total_rows, **extra, **_rates(done, nbytes, seconds)}


async def run_all(admin_dsn: str, db_path: Path, stats: dict, *, runs: int, connections: int,
                  naive_budget_s: float, rbr_rows: int, log=print) -> dict:
    """Run every baseline for every benchmark table in a scratch database; return {table: {kind: result}}."""
    dsn = await pgutil.recreate_database(admin_dsn, "bench_baseline")
    info = await pgutil.server_info(dsn)
    out: dict = {"_server": info}
    try:
        for table in pgutil.BENCH_TABLES:
            st = stats[table]
            log(f"baseline {table}: ceiling ({runs} runs, {connections} connections) ...")
            res = {"ceiling": await ceiling(dsn, db_path, table, st["bytes"], runs, connections, info["lz4"])}
            con = await asyncpg.connect(dsn)
            cols = await target_columns(con, table)
            await pgutil.reset_tables(con, (table,))
            await con.close()
            log(f"baseline {table}: naive executemany (budget {naive_budget_s:.0f} s) ...")
            res["naive"] = await asyncio.to_thread(naive, dsn, db_path, table, cols, st["rows"], naive_budget_s)
            con = await asyncpg.connect(dsn)
            await pgutil.reset_tables(con, (table,))
            await con.close()
            log(f"baseline {table}: row-by-row ({rbr_rows} rows max) ...")
            res["row_by_row"] = await asyncio.to_thread(row_by_row, dsn, db_path, table, cols, st["rows"],
                                                        rbr_rows, naive_budget_s)
            out[table] = res
    finally:
        await pgutil.drop_database(admin_dsn, "bench_baseline")
    return out
