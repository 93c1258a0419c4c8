"""The snapshot's copy of hridaai.db: a file copy under SHARED lock in rollback-journal mode, the backup API in WAL
mode (committed rows still in the -wal file must be in the copy)."""

from __future__ import annotations

import shutil
import sqlite3

from conftest import SMALL
from migrator import snapshot
from migrator.sources import live


def _rows(db, table="t") -> list:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
    finally:
        conn.close()


def test_rollback_journal_database_is_copied_whole(tmp_path):
    source = tmp_path / "hridaai.db"
    shutil.copy(SMALL / "hridaai.db", source)
    dest = tmp_path / "copy.db"
    live.backup(source, dest, key=None)
    snapshot._check_copy(source, dest, key=None)
    assert dest.read_bytes() == source.read_bytes()


def test_wal_database_copy_holds_the_commits_still_in_the_wal(tmp_path):
    source = tmp_path / "hridaai.db"
    writer = sqlite3.connect(source)
    try:
        assert writer.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        writer.execute("PRAGMA wal_autocheckpoint=0")  # nothing moves into the main file
        writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        writer.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(500)])
        writer.commit()
        assert (tmp_path / "hridaai.db-wal").stat().st_size > 0
        dest = tmp_path / "copy.db"
        live.backup(source, dest, key=None)  # the writer's connection is still open
        snapshot._check_copy(source, dest, key=None)
    finally:
        writer.close()
    assert _rows(dest) == [(i + 1, f"row {i}") for i in range(500)]


def test_a_writer_cannot_commit_while_the_file_is_copied(tmp_path, monkeypatch):
    """While the copy holds its SHARED lock a writer cannot commit (it gets SQLITE_BUSY), so the copy never sees a
    half-written database."""
    source = tmp_path / "hridaai.db"
    conn = sqlite3.connect(source)
    conn.execute("CREATE TABLE t (v)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()
    seen = {}
    real_copy = shutil.copyfile

    def copy_while_writing(src, dst, *a, **kw):
        writer = sqlite3.connect(source, timeout=0)
        try:
            writer.execute("INSERT INTO t VALUES (2)")
            try:
                writer.commit()
                seen["committed"] = True
            except sqlite3.OperationalError as exc:
                seen["busy"] = str(exc)
                writer.rollback()
        finally:
            writer.close()
        return real_copy(src, dst, *a, **kw)

    monkeypatch.setattr(snapshot.shutil, "copyfile", copy_while_writing)
    live.backup(source, tmp_path / "copy.db", key=None)
    assert "locked" in seen.get("busy", "") and "committed" not in seen
    assert _rows(tmp_path / "copy.db") == [(1,)]
