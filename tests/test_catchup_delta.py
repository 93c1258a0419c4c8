"""Issue 15 groundwork: what changed in each table between two snapshots, found locally by a merge in key order
(migrator/catchup/delta.py), on the real 0.12.4 fixture changed the way HridaAI changes it."""

from __future__ import annotations

import json
import shutil
import sqlite3

from conftest import SMALL
from migrator.catchup.delta import table_delta
from migrator.plan.model import TablePlan


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]


def _pair(tmp_path):
    old = tmp_path / "old.db"
    shutil.copy(SMALL / "hridaai.db", old)
    new = tmp_path / "new.db"
    shutil.copy(old, new)
    return old, new


def test_inserts_updates_deletes_and_a_changed_key_in_a_keyed_table(tmp_path):
    old, new = _pair(tmp_path)
    db = sqlite3.connect(new)
    ids = [r[0] for r in db.execute("SELECT id FROM chat ORDER BY id")]
    assert len(ids) >= 4
    db.execute("UPDATE chat SET title = title || ' (edited)' WHERE id = ?", (ids[0],))
    db.execute("DELETE FROM chat WHERE id = ?", (ids[1],))
    db.execute("UPDATE chat SET id = 'zz-renamed' WHERE id = ?", (ids[2],))  # a key change
    rest = ", ".join(f'"{c}"' for c in _columns(db, "chat") if c != "id")
    db.execute(f"INSERT INTO chat (id, {rest}) SELECT 'aa-new', {rest} FROM chat WHERE id = ?", (ids[3],))
    db.execute("UPDATE chat SET archived = 1 - archived WHERE id = ?", (ids[3],))
    db.commit()
    total = db.execute("SELECT count(*) FROM chat").fetchone()[0]
    db.close()
    a, b = sqlite3.connect(old), sqlite3.connect(new)
    delta = table_delta(a, b, TablePlan("chat", "load", key=["id"]), _columns(b, "chat"))
    rowid = {r[1]: r[0] for r in b.execute("SELECT rowid, id FROM chat")}
    assert sorted(delta.inserted) == sorted([rowid["aa-new"], rowid["zz-renamed"]])
    assert sorted(delta.updated) == sorted([rowid[ids[0]], rowid[ids[3]]])
    assert sorted(json.loads(k)[0] for k in delta.deleted) == sorted([ids[1], ids[2]])
    assert delta.unchanged == total - 4 and delta.changes == 6


def test_an_unchanged_table_has_no_delta(tmp_path):
    old, new = _pair(tmp_path)
    a, b = sqlite3.connect(old), sqlite3.connect(new)
    for table in ("chat", "user", "file", "memory"):
        delta = table_delta(a, b, TablePlan(table, "load", key=["id"]), _columns(b, table))
        assert delta.changes == 0 and delta.unchanged == b.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]


def test_a_table_without_a_key_is_a_multiset(tmp_path):
    old, new = _pair(tmp_path)
    for path in (old, new):
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE bag (a TEXT, b INTEGER)")
        db.executemany("INSERT INTO bag VALUES (?, ?)", [("x", 1), ("x", 1), ("y", 2), ("z", None)])
        db.commit()
        db.close()
    db = sqlite3.connect(new)
    db.execute("DELETE FROM bag WHERE rowid = (SELECT min(rowid) FROM bag WHERE a = 'x')")  # one of two twins
    db.execute("UPDATE bag SET b = 3 WHERE a = 'y'")  # a change: one out, one in
    db.execute("INSERT INTO bag VALUES ('z', NULL)")  # a second twin
    db.commit()
    db.close()
    a, b = sqlite3.connect(old), sqlite3.connect(new)
    delta = table_delta(a, b, TablePlan("bag", "load", key=[]), ["a", "b"])
    assert not delta.keyed and delta.updated == []
    y_rowid = a.execute("SELECT rowid FROM bag WHERE a = 'y'").fetchone()[0]
    twin = max(r[0] for r in a.execute("SELECT rowid FROM bag WHERE a = 'x'"))  # one of the two: the later one
    assert sorted(json.loads(k)[0] for k in delta.deleted) == sorted([y_rowid, twin])
    new_rows = {r[0]: r[1:] for r in b.execute("SELECT rowid, a, b FROM bag")}
    assert sorted(new_rows[r] for r in delta.inserted) == [("y", 3), ("z", None)]
    assert delta.unchanged == 2


def test_a_value_stored_with_another_type_is_a_change(tmp_path):
    """1 (INTEGER) and 1.0 (REAL), 0.0 and -0.0 are equal in Python, not as stored: their conversion may differ."""
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    for path, value in ((old, 1), (new, 1.0)):
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, v, w)")  # no affinity: values keep their type
        db.executemany("INSERT INTO t VALUES (?, ?, ?)", [("a", value, 0.0), ("b", 2, 0.0)])
        db.commit()
        db.close()
    db = sqlite3.connect(new)
    db.execute("UPDATE t SET w = -0.0 WHERE id = 'b'")
    db.commit()
    db.close()
    a, b = sqlite3.connect(old), sqlite3.connect(new)
    assert b.execute("SELECT typeof(v) FROM t WHERE id = 'a'").fetchone()[0] == "real"
    delta = table_delta(a, b, TablePlan("t", "load", key=["id"]), ["id", "v", "w"])
    assert len(delta.updated) == 2 and delta.inserted == [] and delta.deleted == []
