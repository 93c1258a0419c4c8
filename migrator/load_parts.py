"""Big tables load in parts: disjoint rowid ranges, each its own ledger unit, so that the `--jobs` connections can
share one table (one connection per table left the other idle while the biggest table loaded).

The parts follow from the snapshot alone (row count, payload bytes, rowid quantiles), never from `--jobs`, so a
resume with another `--jobs` finds the same units. The first part's unit is the table's name, later ones
`<table>#<k>`: a table small enough for one part keeps the unit name it always had.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from migrator.plan_model import TablePlan
from migrator.sources import sqlite as src

SEP = "#"
PART_BYTES = 32 << 20
PART_ROWS = 50_000
MAX_PARTS = 8
FIRST = -(2 ** 63)
LAST = 2 ** 63 - 1


@dataclass(frozen=True)
class Part:
    """Rows of `table` with after < rowid <= until."""

    table: str
    unit: str
    after: int
    until: int
    rows: int
    bytes: int


def table_of(unit: str) -> str:
    """The table a ledger unit belongs to."""
    return unit.split(SEP, 1)[0]


def count(table: TablePlan, stored: int = 0) -> int:
    """How many parts: one per PART_BYTES (payload, or `stored` bytes of its pages when larger) or PART_ROWS rows,
    at most MAX_PARTS; tables whose rows reference each other (parents must commit first) and whole-table
    quarantines stay in one part."""
    if table.self_ref or table.action != "load" or table.rows < 2:
        return 1
    size = max(table.bytes, stored)
    return max(1, min(MAX_PARTS, table.rows, max(size // PART_BYTES, table.rows // PART_ROWS)))


def stored_bytes(conn: sqlite3.Connection, names: list[str]) -> dict[str, int]:
    """Bytes of each table's pages (SQLite's dbstat; {} where this SQLite is built without it). `run` plans without
    measuring payload, so this is what tells a table of big JSON values apart."""
    try:
        marks = ",".join("?" * len(names))
        return dict(conn.execute(f"SELECT name, sum(pgsize) FROM dbstat WHERE name IN ({marks}) GROUP BY name",
                                 names).fetchall())
    except sqlite3.Error:
        return {}


def split(conn: sqlite3.Connection, table: TablePlan, stored: int = 0) -> list[Part]:
    """The parts of one table, boundaries at rowid quantiles of the snapshot."""
    n = count(table, stored)
    if n == 1:
        return [Part(table.name, table.name, FIRST, LAST, table.rows, table.bytes)]
    sql = f"SELECT rowid FROM {src.qi(table.name)} ORDER BY rowid LIMIT 1 OFFSET ?"
    cuts = [conn.execute(sql, (table.rows * k // n - 1,)).fetchone()[0] for k in range(1, n)]
    bounds = [FIRST, *cuts, LAST]
    sizes = [table.rows * (k + 1) // n - table.rows * k // n for k in range(n)]
    return [Part(table.name, table.name if k == 0 else f"{table.name}{SEP}{k + 1}", bounds[k], bounds[k + 1],
                 sizes[k], table.bytes * sizes[k] // table.rows) for k in range(n)]


def split_all(db_path, tables: list[TablePlan]) -> dict[str, list[Part]]:
    """Parts of every table, read from the snapshot's database."""
    conn = src.connect(db_path, immutable=True)
    try:
        stored = stored_bytes(conn, [t.name for t in tables if t.action == "load" and not t.self_ref])
        return {t.name: split(conn, t, stored.get(t.name, 0)) for t in tables}
    finally:
        conn.close()
