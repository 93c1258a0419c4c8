"""A stand-in for the ``migrate`` CLI, only for testing the harness itself (not a migrator!).

``python -m bench --migrate-cmd "python -m bench.standin_migrate"`` exercises the run/verify/timing/RSS path:
``run`` COPYs chat, chat_message and message (the baseline DDL, one connection per table in turn, 2 at a time
overall) in batches; ``verify`` compares row counts and exits 3 on a difference, like the real tool's exit code.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import asyncpg

from bench import baselines, pgutil


async def _load(dsn: str, db_path: Path, table: str) -> None:
    con = await asyncpg.connect(dsn)
    try:
        await con.execute(pgutil.TARGET_DDL[table])
        cols = await baselines.target_columns(con, table)
        rows = baselines.read_rows(db_path, table, cols)
        for batch in baselines.make_batches(rows):
            async with con.transaction():
                await con.copy_records_to_table(table, records=batch, columns=[c for c, _ in cols])
    finally:
        await con.close()


async def run(dsn: str, db_path: Path) -> int:
    """Load the benchmark tables, two tables at a time."""
    sem = asyncio.Semaphore(2)

    async def one(t):
        async with sem:
            await _load(dsn, db_path, t)

    await asyncio.gather(*(one(t) for t in pgutil.BENCH_TABLES))
    return 0


async def verify(dsn: str, db_path: Path) -> int:
    """Compare row counts; 0 when equal, 3 otherwise."""
    import sqlite3
    src = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    con = await asyncpg.connect(dsn)
    bad = 0
    try:
        for t in pgutil.BENCH_TABLES:
            a = src.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
            b = await con.fetchval(f"SELECT count(*) FROM {t}")
            print(f"{t}: source {a} target {b}")
            bad += a != b
    finally:
        await con.close()
        src.close()
    return 3 if bad else 0


def main(argv=None) -> int:
    """``run|verify --data-dir D --work-dir W --target DSN``."""
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=("run", "verify"))
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--work-dir", type=Path, required=True)
    ap.add_argument("--target", required=True)
    a = ap.parse_args(argv)
    fn = run if a.command == "run" else verify
    return asyncio.run(fn(a.target, a.data_dir / "hridaai.db"))


if __name__ == "__main__":
    sys.exit(main())
