"""Which rows can have changed between two snapshots of the same SQLite file, found from its pages.

Both snapshots are page-for-page copies of HridaAI's file (the backup API and a file copy both keep page numbers),
and SQLite rewrites only the pages a write touches. So a table whose pages are all byte-identical in both files, at
the same numbers and from the same root, holds the same rows; and in a table that did change, a leaf page that is a
leaf of the table in both snapshots, byte-identical, with byte-identical overflow pages, holds the same rows in both
(its cells, and with them every row's rowid, key and values, are the same bytes). Only the rows on the other leaf
pages need reading and comparing: on a typical catch-up, a few hundred pages of a file of hundreds of thousands.

The page lists come from SQLite's `dbstat` table; the rowids on a leaf page from its cells (file format §1.6: a table
b-tree leaf cell starts with the payload size and the rowid, two varints). Where any of this is unavailable (SQLite
built without dbstat, an encrypted file, page sizes that differ, a WITHOUT ROWID table) the caller compares whole
tables instead.
"""

from __future__ import annotations

import mmap
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
                out.extend(_leaf_cells(f.read(self.page_size), page))
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


def _leaf_cells(page: bytes, number: int) -> list[int]:
    header = 100 if number == 1 else 0
    if not page or page[header] != LEAF_TABLE:
        raise ValueError(f"page {number} is not a table leaf")
    cells = int.from_bytes(page[header + 3:header + 5], "big")
    out = []
    for i in range(cells):
        at = int.from_bytes(page[header + 8 + 2 * i:header + 10 + 2 * i], "big")
        _, at = _varint(page, at)
        rowid, _ = _varint(page, at)
        out.append(rowid - (1 << 64) if rowid >= 1 << 63 else rowid)
    return out


def _varint(buf: bytes, at: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        b = buf[at + i]
        value = (value << 7) | (b & 0x7F)
        if b < 0x80:
            return value, at + i + 1
    return (value << 8) | buf[at + 8], at + 9


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

    def __init__(self, diff: PageDiff, old: sqlite3.Connection, new_pages: dict[str, TablePages],
                 roots: tuple[dict[str, int], dict[str, int]]):
        self.diff, self._old, self._new_pages, self._roots = diff, old, new_pages, roots

    @classmethod
    def open(cls, old_path: Path, new_path: Path, old: sqlite3.Connection, new: sqlite3.Connection) -> Pages | None:
        """None when the files cannot be compared by page (then every table is compared whole). The comparison runs
        while the new file's page lists are read (numpy leaves the GIL). The old file's page lists are read per
        changed table (reading them all at once too was slower: both lists are built in Python, under the GIL)."""
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(compare, old_path, new_path)
            new_pages = table_pages(new)
            diff = pending.result()
        if diff is None or new_pages is None:
            return None
        return cls(diff, old, new_pages, (_roots(old), _roots(new)))

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


def _roots(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT name, rootpage FROM sqlite_master WHERE type = 'table'"))
