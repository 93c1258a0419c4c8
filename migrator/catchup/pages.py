"""Which rows can have changed between two snapshots of the same SQLite file, found from its pages.

Both snapshots are page-for-page copies of HridaAI's file (the backup API and a file copy both keep page numbers),
and SQLite rewrites only the pages a write touches. So a table whose pages are all byte-identical in both files, at
the same numbers and from the same root, holds the same rows; and in a table that did change, a leaf page that is a
leaf of the table in both snapshots, byte-identical, with byte-identical overflow pages, holds the same rows in both
(its cells, and with them every row's rowid, key and values, are the same bytes). Only the rows on the other leaf
pages need reading and comparing: on a typical catch-up, a few hundred pages of a file of hundreds of thousands.

The page lists come from the files themselves (btree.py: each b-tree walked from its root through its interior
pages, leaves listed by their parents, about one page in two hundred read). Overflow pages are not listed per
tree; instead every differing page that is not a b-tree page nor free in the new file (an overflow page that
changed) must belong to the overflow chain of a cell on a page that is read anyway (a differing b-tree page, or a
leaf that is new to its tree). Then no unchanged leaf has a changed overflow page, and the rule above holds. When
one does not (SQLite overwrote a same-size value in place: the leaf keeps its bytes, an overflow page changes), or
the files cannot be walked, the page lists come from SQLite's `dbstat` table, overflow pages per leaf included.
The rowids on a leaf page come from its cells. Where none of this is available (SQLite built without dbstat, an
encrypted file, page sizes that differ, a WITHOUT ROWID table) the caller compares whole tables instead.
"""

from __future__ import annotations

import mmap
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from migrator.catchup import btree

LEAF_TABLE = 0x0D
CHUNK_PAGES = 16384  # compared at once: 64 MiB of 4 KiB pages per side


@dataclass
class TablePages:
    """One b-tree's pages in one snapshot: its leaves, the overflow pages of each leaf's cells, every other page."""

    leaves: set[int] = field(default_factory=set)
    overflow: dict[int, list[int]] = field(default_factory=dict)  # leaf page -> overflow pages of its cells
    other: set[int] = field(default_factory=set)

    def all(self) -> set[int]:
        """Every page of the tree."""
        return self.leaves | self.other | {p for pages in self.overflow.values() for p in pages}


class PageDiff:
    """Two snapshot files compared page by page (each read once, through mmap)."""

    def __init__(self, old: Path, new: Path, page_size: int, differing: set[int], common: int):
        self.old, self.new, self.page_size = old, new, page_size
        self.differing = differing  # page numbers (1-based) present in both files whose bytes differ
        self.common = common  # pages present in both files

    def same(self, page: int) -> bool:
        """Whether `page` exists in both files with the same bytes."""
        return page <= self.common and page not in self.differing

    def leaf_rowids(self, side: str, pages: set[int]) -> list[int]:
        """The rowids of the cells of table-leaf `pages` in the `side` ("old" or "new") file."""
        out: list[int] = []
        with open(self.old if side == "old" else self.new, "rb") as f:
            for page in sorted(pages):
                f.seek((page - 1) * self.page_size)
                out.extend(btree.leaf_rowids(f.read(self.page_size), page))
        return out


def compare(old: Path, new: Path) -> PageDiff | None:
    """The page diff of two plain SQLite files of the same page size, or None (compare whole tables instead)."""
    sizes = [_page_size(p) for p in (old, new)]
    if None in sizes or sizes[0] != sizes[1]:
        return None
    size = sizes[0]
    with open(old, "rb") as fa, open(new, "rb") as fb:
        common = min(_length(fa), _length(fb)) // size
        differing: set[int] = set()
        if common:
            with mmap.mmap(fa.fileno(), common * size, access=mmap.ACCESS_READ) as ma, \
                    mmap.mmap(fb.fileno(), common * size, access=mmap.ACCESS_READ) as mb:
                a, b = (np.frombuffer(m, dtype=np.uint64).reshape(common, size // 8) for m in (ma, mb))
                for start in range(0, common, CHUNK_PAGES):
                    rows = np.flatnonzero((a[start:start + CHUNK_PAGES] != b[start:start + CHUNK_PAGES]).any(axis=1))
                    differing.update((rows + start + 1).tolist())
                del a, b  # the views must go before their maps close
    return PageDiff(old, new, size, differing, common)


def table_pages(conn: sqlite3.Connection, name: str | None = None) -> dict[str, TablePages] | None:
    """Every b-tree's pages (or only `name`'s), from dbstat; None when this SQLite has no dbstat."""
    sql = "SELECT name, path, pageno, pagetype FROM dbstat" + (" WHERE name = ?" if name is not None else "")
    out: dict[str, TablePages] = {}
    paths: dict[tuple[str, str], int] = {}
    overflow: list[tuple[str, str, int]] = []
    try:
        rows = conn.execute(sql, () if name is None else (name,))
        for tree, path, page, kind in rows:
            t = out.setdefault(tree, TablePages())
            if kind == "overflow":
                overflow.append((tree, path, page))
            elif kind == "leaf":
                t.leaves.add(page)
                paths[(tree, path)] = page
            else:
                t.other.add(page)
    except sqlite3.OperationalError:
        return None
    for tree, path, page in overflow:  # "/000/001/" leaf, "/000/001/00a+000002" its cell 10's third overflow page
        leaf = paths.get((tree, path[:path.rindex("/") + 1]))
        if leaf is None:
            out[tree].other.add(page)
            continue
        out[tree].overflow.setdefault(leaf, []).append(page)
    return out


def unchanged(diff: PageDiff, new: TablePages, same_root: bool) -> bool:
    """A tree whose root is the same page in both snapshots and whose every page is byte-identical holds the same
    rows in both."""
    return same_root and all(diff.same(p) for p in new.all())


def clean_leaves(diff: PageDiff, old: TablePages, new: TablePages) -> set[int]:
    """The leaves that hold the same rows in both snapshots: a leaf of the tree in both, its bytes and those of its
    overflow pages the same (then its cells point to the same overflow chains, so the old side needs no check)."""
    return {p for p in new.leaves & old.leaves
            if diff.same(p) and all(diff.same(o) for o in new.overflow.get(p, ()))}


def _page_size(path: Path) -> int | None:
    with open(path, "rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return None
    size = int.from_bytes(head[16:18], "big")
    return 65536 if size == 1 else size


def _length(f) -> int:
    f.seek(0, 2)
    return f.tell()


class Pages:
    """Both snapshots' page diff and b-tree page lists: which rowids of a table may differ between them."""

    way = "dbstat"  # where the page lists came from (the bench and the tests tell the ways apart)

    def __init__(self, diff: PageDiff, old: sqlite3.Connection, new_pages: dict[str, TablePages],
                 roots: tuple[dict[str, int], dict[str, int]]):
        self.diff, self._old, self._new_pages, self._roots = diff, old, new_pages, roots

    @classmethod
    def open(cls, old_path: Path, new_path: Path, old: sqlite3.Connection, new: sqlite3.Connection,
             known: PageDiff | None = None) -> Pages | None:
        """None when the files cannot be compared by page (then every table is compared whole). The comparison runs
        while both files' b-trees are walked (numpy leaves the GIL); when they cannot be, or an overflow page
        changed under an unchanged leaf, the page lists come from dbstat: the new file's all at once, the old
        file's per changed table. known: the diff of these two files found before (by the snapshot), if any."""
        roots = (_roots(old), _roots(new))
        with ThreadPoolExecutor(max_workers=1) as pool:
            if known is not None and known.old == old_path:
                pending = pool.submit(PageDiff, old_path, new_path, known.page_size, known.differing, known.common)
            else:
                pending = pool.submit(compare, old_path, new_path)
            walked = _walk(old_path, new_path, _trees(old), _trees(new))
            diff = pending.result()
        if diff is None:
            return None
        if walked is not None and walked.sound(diff):
            return WalkedPages(diff, walked, roots)
        new_pages = table_pages(new)
        if new_pages is None:
            return None
        return cls(diff, old, new_pages, roots)

    def candidates(self, table: str) -> tuple[list[int], list[int]] | None:
        """(old rowids, new rowids) of the rows on pages that differ (both empty: the table is unchanged), or None
        when this table cannot be told by its pages (not a rowid table, no dbstat answer)."""
        new = self._new_pages.get(table)
        if new is None:
            return None
        if unchanged(self.diff, new, self._roots[0].get(table) == self._roots[1].get(table)):
            return [], []
        old = (table_pages(self._old, table) or {}).get(table)
        if old is None:
            return None
        clean = clean_leaves(self.diff, old, new)
        try:
            return self.diff.leaf_rowids("old", old.leaves - clean), self.diff.leaf_rowids("new", new.leaves - clean)
        except ValueError:  # an index b-tree (WITHOUT ROWID): its cells are not rowids
            return None


@dataclass
class Walked:
    """Both files' b-trees by name, and what the new file's differing pages are."""

    old: dict[str, btree.Tree]
    new: dict[str, btree.Tree]
    new_path: Path
    free: set[int]  # the new file's freelist

    def sound(self, diff: PageDiff) -> bool:
        """Whether every differing page that is an overflow page in the new file lies in a chain of a cell on a
        page whose rows are read anyway (a differing b-tree page, or a leaf new to its tree)."""
        tree_pages = set().union(*(t.pages() for t in self.new.values()))
        beyond = set(range(diff.common + 1, max(diff.common, _pages(self.new_path, diff.page_size)) + 1))
        changed = diff.differing | beyond
        loose = changed - tree_pages - self.free
        if not loose:
            return True
        read = {p for p in changed if p in tree_pages}
        for name, t in self.new.items():
            before = self.old.get(name)
            read |= t.leaves - (before.leaves if before is not None and before.root == t.root else set())
        try:
            with btree.File(self.new_path) as f:
                for page in sorted(read):
                    loose -= f.overflow(page)
                    if not loose:
                        return True
        except btree.Unreadable:
            return False
        return not loose


class WalkedPages(Pages):
    """Pages whose lists come from walking both files (Walked, checked sound)."""

    way = "walk"

    def __init__(self, diff: PageDiff, walked: Walked, roots: tuple[dict[str, int], dict[str, int]]):
        self.diff, self._walked, self._roots = diff, walked, roots

    def candidates(self, table: str) -> tuple[list[int], list[int]] | None:
        new, old = self._walked.new.get(table), self._walked.old.get(table)
        if new is None:
            return None
        if old is not None and old.root == new.root and all(self.diff.same(p) for p in new.pages()):
            return [], []
        if old is None or not (new.table and old.table):
            return None  # a table that is not in the old file, or an index b-tree (WITHOUT ROWID)
        clean = {p for p in new.leaves & old.leaves if self.diff.same(p)}
        return self.diff.leaf_rowids("old", old.leaves - clean), self.diff.leaf_rowids("new", new.leaves - clean)


def _walk(old_path: Path, new_path: Path, old_roots: dict[str, int], new_roots: dict[str, int]) -> Walked | None:
    try:
        with btree.File(old_path) as a, btree.File(new_path) as b:
            if a.page_size != b.page_size or a.usable != b.usable:
                return None
            return Walked({n: a.tree(r) for n, r in old_roots.items()}, {n: b.tree(r) for n, r in new_roots.items()},
                          new_path, b.freelist())
    except btree.Unreadable:
        return None


def _trees(conn: sqlite3.Connection) -> dict[str, int]:
    """Every b-tree's root page: the schema table's, each table's and each index's."""
    return {"sqlite_schema": 1, **dict(conn.execute("SELECT name, rootpage FROM sqlite_master WHERE rootpage > 0"))}


def _pages(path: Path, page_size: int) -> int:
    with open(path, "rb") as f:
        return _length(f) // page_size


def _roots(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT name, rootpage FROM sqlite_master WHERE type = 'table'"))
