"""Issue 15, the window: catch-up finds a table's delta from the pages that differ between the two snapshot files
(migrator/catchup/pages.py) and reads only the rows on them; the result must equal the whole merge's
(delta.table_delta) on every table, whatever SQLite did to the pages, and it must step aside where it cannot know."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from conftest import SMALL
from migrator.catchup import btree, pages
from migrator.catchup.delta import candidates_delta, table_delta
from migrator.plan.model import TablePlan


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]


def _key(conn: sqlite3.Connection, table: str) -> list[str] | None:
    return [r[1] for r in sorted(conn.execute(f'PRAGMA table_info("{table}")'), key=lambda r: r[5]) if r[5]] or None


def _pair(tmp_path, change, source=SMALL / "hridaai.db"):
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    shutil.copy(source, old)
    shutil.copy(old, new)
    db = sqlite3.connect(new)
    change(db)
    db.commit()
    db.close()
    return old, new


def _both(old, new, way: str = "walk") -> tuple[dict, dict]:
    """Every table's delta both ways; the page way's None (stepped aside) kept as None. `way`: where the page lists
    must have come from (the files walked, or SQLite's dbstat)."""
    a, b = (sqlite3.connect(f"file:{p}?mode=ro&immutable=1", uri=True, check_same_thread=False) for p in (old, new))
    by_page = pages.Pages.open(old, new, a, b)
    assert by_page is not None and by_page.way == way
    merged, paged = {}, {}
    for (name,) in b.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"):
        t = TablePlan(name, "load", key=_key(b, name))
        cols = _columns(b, name)
        if b.execute("SELECT sql LIKE '%WITHOUT ROWID%' FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]:
            merged[name] = None  # the merge reads rowids too; HridaAI has no such table
        else:
            merged[name] = table_delta(a, b, t, cols)
        rows = by_page.candidates(name)
        paged[name] = None if rows is None else (rows, candidates_delta(a, b, t, cols, *rows))
    return merged, paged


def _same(m, p) -> bool:
    return (m.inserted, m.updated, m.deleted) == (p.inserted, p.updated, p.deleted)


def _edit_like_hridaai(db: sqlite3.Connection) -> None:
    ids = [r[0] for r in db.execute("SELECT id FROM chat ORDER BY id")]
    db.execute("UPDATE chat SET title = title || ' (edited)', updated_at = updated_at + 1 WHERE id = ?", (ids[0],))
    db.execute("UPDATE chat SET chat = json_set(chat, '$.x', ?) WHERE id = ?", ("y" * 20000, ids[1]))  # overflow
    db.execute("DELETE FROM chat_message WHERE chat_id = ?", (ids[2],))
    db.execute("DELETE FROM chat WHERE id = ?", (ids[2],))
    db.execute("UPDATE chat SET id = 'zz-renamed' WHERE id = ?", (ids[3],))
    rest = ", ".join(f'"{c}"' for c in _columns(db, "chat") if c not in ("id", "share_id"))
    for k in range(40):  # enough to split leaves
        db.execute(f"INSERT INTO chat (id, {rest}) SELECT 'new-{k:02}', {rest} FROM chat WHERE id = ?", (ids[4],))
    db.execute("UPDATE memory SET content = content || '!'")


def test_the_page_delta_equals_the_merge_on_every_table(tmp_path):
    old, new = _pair(tmp_path, _edit_like_hridaai)
    merged, paged = _both(old, new)
    assert merged["chat"].changes >= 44 and merged["memory"].changes >= 1
    for name, m in merged.items():
        assert paged[name] is not None, f"{name}: the page way stepped aside on a plain rowid table"
        (old_rows, new_rows), p = paged[name]
        assert p is not None and _same(m, p), name
        if not m.changes:
            assert (old_rows, new_rows) == ([], []), f"{name}: unchanged, yet {len(new_rows)} rows read"
    total = sqlite3.connect(new).execute("SELECT count(*) FROM chat").fetchone()[0]
    (_, new_rows), _ = paged["chat"]
    assert len(new_rows) < total, "every chat row was read: the pages told nothing"


def test_a_row_whose_overflow_pages_alone_changed_is_found(tmp_path):
    """An UPDATE to a value of the same size is written over the old cell and its overflow chain in place: the leaf
    page keeps its bytes and only an overflow page differs. The row must still be read and found updated."""
    def make(db):
        db.execute("CREATE TABLE doc (id TEXT PRIMARY KEY, body TEXT)")
        db.executemany("INSERT INTO doc VALUES (?, ?)", [(f"d{i}", "a" * 9000) for i in range(20)])
    src = tmp_path / "src.db"
    db = sqlite3.connect(src)
    make(db)
    db.commit()
    db.close()
    old, new = _pair(tmp_path, lambda db: db.execute(
        "UPDATE doc SET body = ? WHERE id = 'd7'", ("a" * 8000 + "b" * 1000,)), source=src)
    diff = pages.compare(old, new)
    b = sqlite3.connect(new)
    tree = pages.table_pages(b, "doc")["doc"]
    leaf = next(p for p, chain in tree.overflow.items() if set(chain) & diff.differing)
    assert diff.same(leaf), "the leaf changed too: this SQLite did not overwrite in place (test premise)"
    merged, paged = _both(old, new, way="dbstat")  # the walk cannot place that overflow page: it asks SQLite
    (_, new_rows), p = paged["doc"]
    assert len(p.updated) == 1 and _same(merged["doc"], p)


def test_it_steps_aside_where_pages_cannot_tell(tmp_path):
    def change(db):
        db.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID")
        db.execute("CREATE TABLE loose (a TEXT, b TEXT)")  # no key SQLite enforces
        db.execute("CREATE TABLE nullkey (id TEXT PRIMARY KEY, v TEXT)")  # a non-INTEGER primary key admits NULLs
    src = tmp_path / "src.db"
    shutil.copy(SMALL / "hridaai.db", src)
    db = sqlite3.connect(src)
    change(db)
    db.commit()
    db.close()

    def edit(db):
        db.execute("INSERT INTO kv VALUES ('a', '1')")
        db.execute("INSERT INTO loose VALUES ('a', '1')")
        db.executemany("INSERT INTO nullkey VALUES (NULL, ?)", [("x",), ("y",)])
    old, new = _pair(tmp_path, edit, source=src)
    merged, paged = _both(old, new)
    assert paged["kv"] is None  # an index b-tree: its cells are not rowids
    a, b = (sqlite3.connect(p) for p in (old, new))
    (rows, p) = paged["loose"]
    assert p is None  # no key: the multiset merge
    assert candidates_delta(a, b, TablePlan("loose", "load", key=["a"]), ["a", "b"], *rows) is None
    (rows, p) = paged["nullkey"]
    assert p is None and merged["nullkey"].changes == 2  # NULL keys: the merge decides


def test_files_that_cannot_be_compared_by_page(tmp_path):
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    for path, size in ((old, 4096), (new, 8192)):
        db = sqlite3.connect(path)
        db.execute(f"PRAGMA page_size = {size}")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        db.commit()
        db.close()
    assert pages.compare(old, new) is None
    new.write_bytes(b"not sqlite" + bytes(5000))  # an encrypted file has no plain header either
    assert pages.compare(old, new) is None


@pytest.mark.parametrize("rowid", [0, 1, 127, 128, 16383, 16384, 2 ** 31, 2 ** 56 + 3, 2 ** 63 - 1, -1, -2 ** 63])
def test_leaf_cells_give_the_rowids_sqlite_stored(tmp_path, rowid):
    path = tmp_path / "r.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (v TEXT)")
    db.executemany("INSERT INTO t (rowid, v) VALUES (?, 'x')", [(rowid,), (5 if rowid != 5 else 6,)])
    db.commit()
    tree = pages.table_pages(db, "t")["t"]
    db.close()
    diff = pages.compare(path, path)
    assert sorted(diff.leaf_rowids("new", tree.leaves)) == sorted([rowid, 5 if rowid != 5 else 6])


def test_the_walked_trees_are_the_ones_sqlite_lists(tmp_path):
    """btree.File against dbstat on a real file after HridaAI-like edits: every b-tree's interior pages and leaves,
    each leaf's overflow pages, and the freelist's size."""
    _, new = _pair(tmp_path, _edit_like_hridaai)
    db = sqlite3.connect(new)
    db.execute("DELETE FROM chat WHERE id LIKE 'new-1%'")  # free pages
    db.commit()
    listed = pages.table_pages(db)
    roots = dict(db.execute("SELECT name, rootpage FROM sqlite_master WHERE rootpage > 0"))
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    db.close()
    assert free > 0
    with btree.File(new) as f:
        assert len(f.freelist()) == free
        for name, root in roots.items():
            tree, want = f.tree(root), listed[name]
            assert tree.leaves == want.leaves, name
            assert tree.interior | tree.leaves | {p for c in want.overflow.values() for p in c} == want.all(), name
            for leaf, chain in want.overflow.items():
                assert f.overflow(leaf) == set(chain), (name, leaf)
        assert any(f.overflow(leaf) for leaf in f.tree(roots["chat"]).leaves)


def test_a_file_that_is_not_as_the_format_says_is_not_walked(tmp_path):
    old, new = _pair(tmp_path, _edit_like_hridaai)
    data = bytearray(new.read_bytes())
    with btree.File(new) as f:
        root = next(r for r in (f.tree(r) for r in range(2, f.count)
                                if f._kind(r) == btree.TABLE_INTERIOR) if r.interior)
        at = (next(iter(root.interior)) - 1) * f.page_size
    data[at + 8:at + 12] = (10 ** 9).to_bytes(4, "big")  # a right-most child far beyond the file
    new.write_bytes(bytes(data))
    with btree.File(new) as f, pytest.raises(btree.Unreadable):
        f.tree(root.root)


def test_a_diff_found_by_the_snapshot_is_used_as_is(tmp_path):
    """catch-up's snapshot hands the page diff it found to the delta (known=): the same candidates as comparing the
    files again, and a diff of other files is not taken."""
    old, new = _pair(tmp_path, _edit_like_hridaai)
    a, b = (sqlite3.connect(f"file:{p}?mode=ro&immutable=1", uri=True, check_same_thread=False) for p in (old, new))
    fresh = pages.Pages.open(old, new, a, b)
    known = pages.compare(old, new)
    given = pages.Pages.open(old, new, a, b, known=known)
    assert given.diff.differing is known.differing
    other = pages.PageDiff(tmp_path / "elsewhere.db", new, known.page_size, set(), known.common)
    assert pages.Pages.open(old, new, a, b, known=other).diff.differing == fresh.diff.differing != set()
    for (name,) in b.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        assert given.candidates(name) == fresh.candidates(name), name
