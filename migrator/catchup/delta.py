"""What changed in one table between two snapshots of the same install: rows inserted, updated and deleted.

Both snapshots are files on this machine, so the delta is found locally, by one merge of the two tables read in key
order (the plan's key: the target's primary key, else the unique index the source satisfies), comparing raw rows: a
row whose stored values are identical converts identically, so only the changed rows need converting and writing
later. Memory: one row of each side at a time, plus the change lists (keys and new rowids only).

Where the two files can be compared page by page (`pages.Pages`), only the rows on the pages that differ are read:
the rest are the same bytes in both. That needs a key SQLite itself keeps unique in both snapshots (its primary key
or a unique index on exactly the key's columns) and no NULL in it among the rows read; otherwise the whole merge.

A table without a key is a multiset of rows: both sides are read ordered by every column and merged with counts; a
changed row is one deleted and one inserted. A row whose key changed is a delete of the old key and an insert of the
new one (so the target's ON DELETE rules act as they would on HridaAI's own delete).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from migrator.catalog.schema import qi
from migrator.convert.keys import dumps
from migrator.plan.model import TablePlan
from migrator.sources.sqlite import lenient_text


@dataclass
class TableDelta:
    """The changes of one table. `inserted` / `updated`: rowids in the new snapshot (read them from there to convert
    and write); `deleted`: key values in the old snapshot (ledger text, as the load keys rows), or for a table without
    a key the old snapshot's rowids of the rows to remove (one target row each, matched by every column)."""

    table: str
    keyed: bool
    inserted: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def changes(self) -> int:
        """How many rows the catch-up writes or removes."""
        return len(self.inserted) + len(self.updated) + len(self.deleted)


def table_delta(old: sqlite3.Connection, new: sqlite3.Connection, table: TablePlan, columns: Sequence[str]
                ) -> TableDelta:
    """The delta of `table` from snapshot `old` to snapshot `new` (read-only connections), comparing `columns`
    (the columns the load copies, present in both snapshots)."""
    keys = list(table.key or [])
    if keys and not set(keys) <= set(columns):
        raise ValueError(f"{table.name}: key columns {keys} are not among the compared columns")
    order = keys or list(columns)
    delta = TableDelta(table.name, keyed=bool(keys))
    positions = [list(columns).index(k) for k in order]
    left, right = _rows(old, table.name, columns, order), _rows(new, table.name, columns, order)
    a, b = next(left, None), next(right, None)
    while a is not None or b is not None:
        ka = _order_key(a[1], positions) if a is not None else None
        kb = _order_key(b[1], positions) if b is not None else None
        if b is None or (a is not None and ka < kb):
            delta.deleted.append(_deleted_key(a, keys, positions))
            a = next(left, None)
        elif a is None or kb < ka:
            delta.inserted.append(b[0])
            b = next(right, None)
        else:
            if keys and _typed(a[1]) != _typed(b[1]):
                delta.updated.append(b[0])
            else:
                delta.unchanged += 1
            a, b = next(left, None), next(right, None)
    return delta


def candidates_delta(old: sqlite3.Connection, new: sqlite3.Connection, table: TablePlan, columns: Sequence[str],
                     old_rowids: Sequence[int], new_rowids: Sequence[int]) -> TableDelta | None:
    """The delta of `table` when only the rows `old_rowids` (old snapshot) and `new_rowids` (new snapshot) can
    differ, every other row being the same in both; None when that cannot be decided from them (no key SQLite keeps
    unique, a NULL in a key): then `table_delta`. Same result as `table_delta`, in the same order."""
    keys = list(table.key or [])
    if not keys or not set(keys) <= set(columns) or not all(unique_in_sqlite(c, table.name, keys) for c in (old, new)):
        return None
    positions = [list(columns).index(k) for k in keys]
    before: dict[tuple, tuple[int, tuple]] = {}
    for rowid, values in _rows_at(old, table.name, columns, old_rowids):
        key = tuple(values[p] for p in positions)
        if None in key:
            return None
        before[key] = (rowid, values)
    delta = TableDelta(table.name, keyed=True)
    written: list[tuple[tuple, int, bool]] = []
    for rowid, values in _rows_at(new, table.name, columns, new_rowids):
        key = tuple(values[p] for p in positions)
        if None in key:
            return None
        was = before.pop(key, None)
        if was is None or _typed(was[1]) != _typed(values):
            written.append((_order_key(values, positions), rowid, was is None))
        else:
            delta.unchanged += 1
    for _, rowid, inserted in sorted(written, key=lambda w: w[0]):
        (delta.inserted if inserted else delta.updated).append(rowid)
    gone = sorted(before.values(), key=lambda r: _order_key(r[1], positions))
    delta.deleted = [_deleted_key(r, keys, positions) for r in gone]
    return delta


def unique_in_sqlite(conn: sqlite3.Connection, table: str, key: Sequence[str]) -> bool:
    """Whether SQLite keeps `key` unique in `table` (an INTEGER PRIMARY KEY, a primary key or a unique index on
    exactly these columns; NULLs aside)."""
    info = list(conn.execute(f"PRAGMA table_info({qi(table)})"))
    pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
    if set(pk) == set(key):
        return True
    for index in conn.execute(f"PRAGMA index_list({qi(table)})"):
        if index[2] and not index[4]:  # unique, not partial
            cols = [r[2] for r in conn.execute(f"PRAGMA index_info({qi(index[1])})")]
            if None not in cols and set(cols) == set(key):
                return True
    return False


def _rows_at(conn: sqlite3.Connection, table: str, columns: Sequence[str], rowids: Sequence[int]
             ) -> Iterator[tuple[int, tuple]]:
    cols = ", ".join(qi(c) for c in columns)
    conn.text_factory = lenient_text
    try:
        for i in range(0, len(rowids), 900):
            part = list(rowids[i:i + 900])
            sql = f"SELECT rowid, {cols} FROM {qi(table)} WHERE rowid IN ({','.join('?' * len(part))})"
            for row in conn.execute(sql, part):
                yield row[0], tuple(row[1:])
    finally:
        conn.text_factory = str


def _deleted_key(row: tuple[int, tuple], keys: list[str], positions: list[int]) -> str:
    if keys:
        return dumps([row[1][p] for p in positions])
    return dumps([row[0]])


def _rows(conn: sqlite3.Connection, table: str, columns: Sequence[str], order: Sequence[str]
          ) -> Iterator[tuple[int, tuple]]:
    """(rowid, values) in SQLite's order of `order` (BINARY collation, as the merge compares them)."""
    cols = ", ".join(qi(c) for c in columns)
    sql = (f"SELECT rowid, {cols} FROM {qi(table)} ORDER BY "
           + ", ".join(f"{qi(c)} COLLATE BINARY" for c in order) + ", rowid")
    conn.text_factory = lenient_text  # invalid UTF-8 compares as its escaped bytes, as the load reads it
    try:
        for row in conn.execute(sql):
            yield row[0], tuple(row[1:])
    finally:
        conn.text_factory = str


_CLASS = {type(None): 0, int: 1, float: 1, str: 2, bytes: 3}


def _order_key(values: tuple, positions: list[int]) -> tuple:
    """A Python sort key that orders values as SQLite's ORDER BY does: NULL < numbers < text (UTF-8 bytes order =
    code point order) < blobs."""
    return tuple((_CLASS[type(values[p])], values[p]) if values[p] is not None else (0, 0) for p in positions)


def _typed(values: tuple) -> tuple:
    """Raw values compared as stored: 1 (INTEGER) is not 1.0 (REAL), -0.0 is not 0.0 (their conversion may
    differ); a NaN equals itself."""
    return tuple((type(v), v.hex()) if type(v) is float else (type(v), v) for v in values)
