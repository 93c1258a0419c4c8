"""Read-only access to a HridaAI SQLite database (the live source for snapshots, the snapshot for all else).

Raw rows. `read_batch` (the one batch reader of load, plan checks and verify) returns each row as a tuple
`(rowid, *values, size)`: the rowid, then one value per requested column in the order asked for, then (unless
`with_size=False`, which verify uses) the bytes SQLite stores for those values. Every reader of a raw row takes
column i as `raw[1 + i]` and the rowid as `raw[0]`, so the trailing size never matters to it. Text that is not
valid UTF-8 is decoded with surrogateescape (the batch is then marked `lenient`) instead of failing the read.
Rowids lie in [FIRST, LAST] (SQLite's signed 64-bit range): `after=FIRST` reads from the first row.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from migrator.catalog.schema import qi
from migrator.errors import PreflightError, UsageError

log = logging.getLogger(__name__)
INTERNAL_PREFIXES = ("sqlite_",)
SQLITE_HEADER = b"SQLite format 3\x00"
FIRST = -(2 ** 63)  # below every rowid: the `after` that reads from the start
LAST = 2 ** 63 - 1  # the largest rowid: the `until` that reads to the end


@dataclass(frozen=True)
class SourceColumn:
    name: str
    declared: str
    notnull: bool
    pk: int


def connect(path: Path, *, immutable: bool = False, key: str | None = None) -> sqlite3.Connection:
    """Open `path` read-only (URI mode=ro; immutable=1 for snapshots nobody writes). Never creates files.

    An encrypted (SQLCipher) file is opened with sqlcipher3 and `key` (HridaAI's DATABASE_PASSWORD); a plain file
    ignores the key. An encrypted file without a key, or with a wrong one, is one clear PreflightError.
    """
    if not path.exists():
        raise UsageError(f"no SQLite database at {path}",
                         hint="point --data-dir (DATA_DIR) at HridaAI's data directory, the one holding hridaai.db")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro" + ("&immutable=1" if immutable else "")
    if not is_plain_sqlite(path):
        if key is None:
            raise PreflightError(f"{path.name} is not a plain SQLite file: it is encrypted (SQLCipher) or damaged",
                                 detail=f"{path}: the file does not start with the SQLite header",
                                 hint="an encrypted database needs what HridaAI itself was given: "
                                      "DATABASE_TYPE=sqlite+sqlcipher and DATABASE_PASSWORD (or DATABASE_PASSWORD_FILE)"
                                      "; a damaged one must be restored from a backup")
        return _connect_sqlcipher(path, uri, key)
    if key is not None:
        log.info("%s is not encrypted: DATABASE_PASSWORD is not needed to read it", path.name)
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise PreflightError(f"{path.name} is not a readable SQLite database",
                             detail=f"{path}: {exc}",
                             hint="check that DATA_DIR is HridaAI's data directory and the file is not damaged"
                             ) from exc
    return conn


def open_copy(dest: Path, key: str | None) -> sqlite3.Connection:
    """A writable connection to a copy this tool makes (a snapshot's temp file), SQLCipher-keyed when `key`."""
    out = sqlite3.connect(dest)
    if key is not None:
        out.execute(f"PRAGMA key = '{key.replace(chr(39), chr(39) * 2)}'")
    return out


def is_plain_sqlite(path: Path) -> bool:
    """True for an unencrypted SQLite file (or an empty one, which SQLite treats as an empty database)."""
    with path.open("rb") as fh:
        head = fh.read(len(SQLITE_HEADER))
    return head == SQLITE_HEADER or head == b""


def _connect_sqlcipher(path: Path, uri: str, key: str) -> sqlite3.Connection:
    """Open an encrypted database read-only with sqlcipher3 (PRAGMA key first, as HridaAI's engine does)."""
    cipher = _sqlcipher_module()
    conn = cipher.connect(uri, uri=True, check_same_thread=False, isolation_level=None, factory=_cipher_factory())
    conn.source_path, conn.key = path, key
    conn.execute("PRAGMA cipher_log_level = NONE")  # a wrong key is reported once, below, not as log noise
    conn.execute(f"PRAGMA key = {_literal(key)}")
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except cipher.DatabaseError as exc:
        conn.close()
        raise PreflightError(f"cannot decrypt {path.name} with the DATABASE_PASSWORD given",
                             detail=f"{path}: {exc}",
                             hint="set DATABASE_PASSWORD (or DATABASE_PASSWORD_FILE) to the SQLCipher password "
                                  "HridaAI was started with for this database") from exc
    return conn


def _sqlcipher_module():
    try:
        import sqlcipher3
    except ImportError:
        raise PreflightError("the source is encrypted (SQLCipher) and the sqlcipher3 module is not installed",
                             hint="install the sqlcipher3 wheel HridaAI itself uses (pip install sqlcipher3) "
                                  "into the tool's environment, then retry"
                             ) from None
    return sqlcipher3


def _cipher_factory():
    """A sqlcipher3 Connection whose backup() into a plain stdlib database writes the decrypted content.

    SQLite's backup API cannot copy between an encrypted and a plain database, so the snapshot (which every later
    stage reads without a key, from a 0700 work dir) is written with sqlcipher_export inside one read transaction.
    """
    cipher = _sqlcipher_module()

    class CipherConnection(cipher.Connection):
        def backup(self, target, **kwargs):
            """sqlite3.Connection.backup; into a plain stdlib database: the decrypted content."""
            if isinstance(target, cipher.Connection):
                return super().backup(target, **kwargs)
            dest = target.execute("PRAGMA database_list").fetchone()[2]
            if not dest:
                raise sqlite3.DatabaseError("an encrypted source can only be exported into a database file")
            export_decrypted(self.source_path, Path(dest), key=self.key)

    return CipherConnection


def export_decrypted(source: Path, dest: Path, *, key: str) -> None:
    """Write the decrypted content of the SQLCipher database `source` into the plain database file `dest`."""
    cipher = _sqlcipher_module()
    out = cipher.connect(f"file:{quote(str(dest.resolve()))}", uri=True, isolation_level=None)
    try:
        out.execute("PRAGMA cipher_log_level = NONE")
        out.execute("ATTACH DATABASE ? AS enc KEY ?", (f"file:{quote(str(source.resolve()))}?mode=ro", key))
        out.execute("BEGIN")  # one read transaction on the source: a consistent copy even while HridaAI writes
        out.execute("SELECT sqlcipher_export('main', 'enc')")
        out.execute("COMMIT")
        out.execute("DETACH DATABASE enc")
    except cipher.DatabaseError as exc:
        raise sqlite3.DatabaseError(f"decrypting {source.name}: {exc}") from exc
    finally:
        out.close()


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


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


def size_expr(cols: list[str]) -> str:
    """The SQL expression for the bytes SQLite stores for a row's `cols` ("0" for no column)."""
    return " + ".join(f"coalesce(length(CAST({qi(c)} AS BLOB)), 0)" for c in cols) or "0"


def byte_size(conn: sqlite3.Connection, table: str, cols: list[str]) -> int:
    """Sum of the stored lengths of every value (what a load moves)."""
    if not cols:
        return 0
    return conn.execute(f"SELECT coalesce(sum({size_expr(cols)}), 0) FROM {qi(table)}").fetchone()[0]


class Rows(list):
    """A batch of raw rows (the module docstring has their layout): `nbytes` = stored bytes of its values (0 when
    read without sizes); `lenient` = some text was not valid UTF-8 and was decoded with surrogateescape (only then
    do converters need to look for it)."""

    nbytes: int = 0
    lenient: bool = False


def rows_by_rowid(conn: sqlite3.Connection, table: str, cols: list[str], rowids: list[int]) -> Rows:
    """Raw rows (rowid, *values of cols) of `rowids`, in rowid order; text decoded leniently (see read_batch)."""
    out = Rows()
    out.lenient = True
    names = ", ".join(qi(c) for c in cols)
    ordered = sorted(rowids)
    conn.text_factory = lenient_text
    try:
        for i in range(0, len(ordered), 900):
            part = ordered[i:i + 900]
            out += conn.execute(f"SELECT rowid, {names} FROM {qi(table)} WHERE rowid IN "
                                f"({','.join('?' * len(part))}) ORDER BY rowid", part).fetchall()
    finally:
        conn.text_factory = str
    return out


def read_batch(conn: sqlite3.Connection, table: str, cols: list[str], *, after: int, max_rows: int,
               max_bytes: int | None = None, until: int = LAST, with_size: bool = True) -> tuple[Rows, int]:
    """Rows with after < rowid <= until, in rowid order, up to max_rows rows or max_bytes bytes (at least one row).

    Returns (rows, last_rowid), raw rows as the module docstring lays them out: the trailing size (computed by
    SQLite) bounds the batch without touching values in Python. `with_size=False` leaves it out (and with it the
    byte bound: max_bytes must then be None). Text that is not valid UTF-8 is decoded with surrogateescape so
    convert can apply the invalid-UTF-8 policy instead of the whole read failing.
    """
    if with_size == (max_bytes is None):
        raise ValueError("read_batch: max_bytes goes with the size column, and only with it")
    size = f", {size_expr(cols)}" if with_size else ""
    sql = (f"SELECT rowid{''.join(', ' + qi(c) for c in cols)}{size} FROM {qi(table)} "
           "WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?")
    try:
        return _fetch(conn.execute(sql, (after, until, max_rows)), after, max_bytes, with_size)
    except sqlite3.OperationalError as exc:
        if "decode" not in str(exc):
            raise
    conn.text_factory = lenient_text
    try:
        rows, last = _fetch(conn.execute(sql, (after, until, max_rows)), after, max_bytes, with_size)
        rows.lenient = True
        return rows, last
    finally:
        conn.text_factory = str


def _fetch(cur: sqlite3.Cursor, after: int, max_bytes: int | None, with_size: bool) -> tuple[Rows, int]:
    rows = Rows()
    if with_size:
        rows.nbytes = _fill(rows, cur, max_bytes)
    else:
        rows.extend(cur)
    cur.close()
    return rows, (rows[-1][0] if rows else after)


def _fill(rows: Rows, cur: sqlite3.Cursor, max_bytes: int) -> int:
    """Append rows until their trailing sizes reach max_bytes (at least one row); returns the bytes taken."""
    size = 0
    while size < max_bytes:
        chunk = cur.fetchmany(256)
        if not chunk:
            break
        for row in chunk:
            rows.append(row)
            size += row[-1]
            if size >= max_bytes:
                break
    return size


def row_bytes(row: tuple) -> int:
    """Approximate in-memory payload of a row (strings and blobs dominate)."""
    return sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in row)


def lenient_text(raw: bytes) -> str:
    """A text_factory that keeps bytes which are not UTF-8 (as lone surrogates) instead of failing the read."""
    return raw.decode("utf-8", "surrogateescape")
