"""How a table's rows are keyed in verify, fixups, quarantine and resume: the target's primary key, else a unique
index the source data satisfies, else nothing: verify then compares the table as a multiset of full rows (each
row keyed by its own digest on both sides), and fixups and quarantine can only name its rows by SQLite rowid.

Tables that HridaAI's Peewee-era migrations created (0.1–0.3; they survive in older installs' PostgreSQL
databases) have `id varchar(255)` with a UNIQUE index and no primary key: keying them by rowid would compare
SQLite rowids with nothing on the target side.
"""

from __future__ import annotations

import re
import sqlite3

from migrator.catalog import schema as cat
from migrator.plan.model import Check

# a plain (non-partial, non-expression) btree index: USING btree (a, b)
_PLAIN = re.compile(r'^USING btree \(((?:"[^"]+"|\w+)(?:, (?:"[^"]+"|\w+))*)\)$')


def key_of(conn: sqlite3.Connection, target: cat.Table, source_columns: set[str]) -> tuple[list[str], str | None]:
    """(key columns, the unique index or constraint they come from; None for the primary key or no key)."""
    if target.primary_key:
        return list(target.primary_key), None
    for name, columns in sorted(_unique_candidates(target), key=lambda c: (len(c[1]), c[0])):
        if set(columns) <= source_columns and _holds(conn, target, columns):
            return columns, name
    return [], None


def check(table: str, columns: list[str], index: str | None) -> Check | None:
    """The plan's note for a table keyed otherwise than by its primary key."""
    if index is not None:
        return Check("info", "key-from-unique-index", f"{table} has no primary key: its rows are keyed by the "
                     f"unique index {index} ({', '.join(columns)}) in verify, fixups and quarantine")
    if not columns:
        return Check("warn", "no-key-multiset", f"{table} has no primary key and no unique index the source data "
                     "satisfies: verify compares it as a multiset of full rows (counts and contents, differences "
                     "named by row digest); fixups and quarantine name its rows by SQLite rowid "
                     "(resume is unaffected: each part commits with its ledger row)")
    return None


def _unique_candidates(target: cat.Table) -> list[tuple[str, list[str]]]:
    out = [(c["name"], list(c["columns"])) for c in target.constraints if c["kind"] == "u"]
    for ix in target.indexes:
        m = _PLAIN.match(ix["using"] or "") if ix["unique"] else None
        if m:
            out.append((ix["name"], [c.strip('"') for c in m.group(1).split(", ")]))
    return out


def _holds(conn: sqlite3.Connection, target: cat.Table, columns: list[str]) -> bool:
    """The source satisfies the key: no NULL where the target allows one, and no two rows alike."""
    cols = ", ".join(cat.qi(c) for c in columns)
    table = cat.qi(target.name)
    for c in columns:
        column = target.column(c)
        if column is None:
            return False
        if column.nullable and conn.execute(f"SELECT 1 FROM {table} WHERE {cat.qi(c)} IS NULL LIMIT 1").fetchone():
            return False
    dup = conn.execute(f"SELECT 1 FROM {table} GROUP BY {cols} HAVING count(*) > 1 LIMIT 1").fetchone()
    return dup is None

