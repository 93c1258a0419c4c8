"""Read-only access to a HridaAI SQLite database (the live source for snapshots, the snapshot for all else)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from migrator.errors import PreflightError, UsageError

INTERNAL_PREFIXES = ("sqlite_",)


@dataclass(frozen=True)
class SourceColumn:
    name: str
    declared: str
    notnull: bool
    pk: int


def connect(path: Path, *, immutable: bool = False, key: str | None = None) -> sqlite3.Connection:
    """Open `path` read-only (URI mode=ro; immutable=1 for snapshots nobody writes). Never creates files."""
    if not path.exists():
        raise UsageError(f"no SQLite database at {path}",
                         hint="point --data-dir (DATA_DIR) at HridaAI's data directory, the one holding hridaai.db")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro" + ("&immutable=1" if immutable else "")
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
    if key is not None:
        conn.execute(f"PRAGMA key = '{key.replace(chr(39), chr(39) * 2)}'")
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise PreflightError(f"{path.name} is not a readable SQLite database",
                             detail=f"{path}: {exc}",
                             hint="check that DATA_DIR is HridaAI's data directory and the file is not damaged "
                                  "(an encrypted database needs DATABASE_TYPE=sqlite+sqlcipher and DATABASE_PASSWORD)"
                             ) from exc
    return conn


def revision(conn: sqlite3.Connection) -> str | None:
    """The alembic revision recorded in the database, or None when there is none."""
    try:
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.OperationalError:
        return None
    return rows[0][0] if len(rows) == 1 else None


def tables(conn: sqlite3.Connection) -> list[str]:
    """User tables, sorted."""
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
    return [r[0] for r in rows if not r[0].startswith(INTERNAL_PREFIXES)]


def columns(conn: sqlite3.Connection, table: str) -> list[SourceColumn]:
    """Columns with their declared types (which legacy installs declare differently)."""
    rows = conn.execute(f"PRAGMA table_info({qi(table)})").fetchall()
    return [SourceColumn(r[1], (r[2] or "").upper(), bool(r[3]), int(r[5])) for r in rows]


def has_rowid(conn: sqlite3.Connection, table: str) -> bool:
    """WITHOUT ROWID tables cannot be paged by rowid."""
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone()[0] or ""
    return "WITHOUT ROWID" not in sql.upper()


def count(conn: sqlite3.Connection, table: str) -> int:
    """Row count, measured."""
    return conn.execute(f"SELECT count(*) FROM {qi(table)}").fetchone()[0]


def byte_size(conn: sqlite3.Connection, table: str, cols: list[str]) -> int:
    """Sum of the stored lengths of every value (what a load moves)."""
    if not cols:
        return 0
    expr = " + ".join(f"coalesce(length(CAST({qi(c)} AS BLOB)), 0)" for c in cols)
    return conn.execute(f"SELECT coalesce(sum({expr}), 0) FROM {qi(table)}").fetchone()[0]


def read_batch(conn: sqlite3.Connection, table: str, cols: list[str], *, after: int, max_rows: int,
               max_bytes: int) -> tuple[list[tuple], int]:
    """Rows with rowid > after, in rowid order, up to max_rows rows or max_bytes bytes (at least one row).

    Returns (rows, last_rowid); each row is (rowid, *values). Text that is not valid UTF-8 is decoded with
    surrogateescape so convert can apply the invalid-UTF-8 policy instead of the whole read failing.
    """
    sql = f"SELECT rowid, {', '.join(qi(c) for c in cols)} FROM {qi(table)} WHERE rowid > ? ORDER BY rowid LIMIT ?"
    try:
        return _fetch(conn.execute(sql, (after, max_rows)), after, max_bytes)
    except sqlite3.OperationalError as exc:
        if "decode" not in str(exc):
            raise
    conn.text_factory = _lenient_text
    try:
        return _fetch(conn.execute(sql, (after, max_rows)), after, max_bytes)
    finally:
        conn.text_factory = str


def _fetch(cur: sqlite3.Cursor, after: int, max_bytes: int) -> tuple[list[tuple], int]:
    rows: list[tuple] = []
    size = 0
    last = after
    while size < max_bytes:
        chunk = cur.fetchmany(64)
        if not chunk:
            break
        for row in chunk:
            rows.append(row)
            last = row[0]
            size += row_bytes(row)
            if size >= max_bytes:
                break
    cur.close()
    return rows, last


def row_bytes(row: tuple) -> int:
    """Approximate in-memory payload of a row (strings and blobs dominate)."""
    return sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in row)


def iter_rows(conn: sqlite3.Connection, table: str, cols: list[str], *, chunk: int = 2000) -> Iterator[tuple]:
    """Every row as (rowid, *values), in rowid order, in bounded memory (keyset pagination)."""
    after = -(2 ** 63)
    while True:
        rows, after = read_batch(conn, table, cols, after=after, max_rows=chunk, max_bytes=8 * 1024 * 1024)
        if not rows:
            return
        yield from rows


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def qi(name: str) -> str:
    """Quote an SQLite identifier."""
    return '"' + name.replace('"', '""') + '"'
