"""SQLite's file format read directly (https://www.sqlite.org/fileformat2.html, §1.3–1.6): which pages make up each
b-tree, the freelist, and the overflow chains of a page's cells. Only what catch-up's page diff needs, from a file
mapped in memory; interior pages are parsed with numpy (a b-tree's leaves are listed by their parents, not read).

Anything that does not look as the format says (a page type out of place, a child out of range, a page reached
twice) raises Unreadable: the caller then asks SQLite (dbstat) instead.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TABLE_INTERIOR, TABLE_LEAF, INDEX_INTERIOR, INDEX_LEAF = 0x05, 0x0D, 0x02, 0x0A
LEAVES, INTERIORS = (TABLE_LEAF, INDEX_LEAF), (TABLE_INTERIOR, INDEX_INTERIOR)


class Unreadable(Exception):
    """The file is not as this reader expects."""


@dataclass
class Tree:
    """One b-tree's interior pages and leaves (its overflow pages are not listed)."""

    root: int
    table: bool  # a table b-tree (rowid keys); False: an index b-tree (indexes, WITHOUT ROWID tables)
    interior: set[int] = field(default_factory=set)
    leaves: set[int] = field(default_factory=set)

    def pages(self) -> set[int]:
        return self.interior | self.leaves


class File:
    """A SQLite database file, mapped read-only."""

    def __init__(self, path: Path):
        self._f = open(path, "rb")
        try:
            self._mm = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as exc:  # an empty file
            self._f.close()
            raise Unreadable(str(exc)) from None
        head = self._mm[:100]
        if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
            self.close()
            raise Unreadable(f"{path} has no plain SQLite header")
        size = int.from_bytes(head[16:18], "big")
        self.page_size = 65536 if size == 1 else size
        self.usable = self.page_size - head[20]
        self.count = len(self._mm) // self.page_size
        self._bytes = np.frombuffer(self._mm, dtype=np.uint8)

    def close(self) -> None:
        self._bytes = None  # the view must go before its map closes
        self._mm.close()
        self._f.close()

    def __enter__(self) -> File:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def page(self, number: int) -> bytes:
        if not 1 <= number <= self.count:
            raise Unreadable(f"page {number} is beyond the file's {self.count}")
        return self._mm[(number - 1) * self.page_size:number * self.page_size]

    def tree(self, root: int) -> Tree:
        """The pages of the b-tree rooted at `root`: interior pages read, leaves listed from their parents."""
        kind = self._kind(root)
        if kind not in LEAVES + INTERIORS:
            raise Unreadable(f"root page {root} is not a b-tree page")
        tree = Tree(root, kind in (TABLE_LEAF, TABLE_INTERIOR))
        level = np.array([root], dtype=np.int64)
        while True:
            kinds = self._kinds(level)
            if (kinds == (TABLE_LEAF if tree.table else INDEX_LEAF)).all():
                tree.leaves.update(level.tolist())
                break
            if not (kinds == (TABLE_INTERIOR if tree.table else INDEX_INTERIOR)).all():
                raise Unreadable(f"b-tree {root}: a level mixes page types")  # every leaf is at the same depth
            tree.interior.update(level.tolist())
            level = np.concatenate([self._children(int(p)) for p in level])
            if len(tree.interior) + len(level) > self.count or (level < 2).any() or (level > self.count).any():
                raise Unreadable(f"b-tree {root}: children out of range, or more pages than the file has")
        if len(tree.leaves) + len(tree.interior) != len(tree.pages()):
            raise Unreadable(f"b-tree {root}: a page is reached twice")
        return tree

    def freelist(self) -> set[int]:
        """The free pages (trunk and leaf pages of the freelist)."""
        head = self.page(1)
        trunk, expected = int.from_bytes(head[32:36], "big"), int.from_bytes(head[36:40], "big")
        out: set[int] = set()
        while trunk:
            if trunk in out or len(out) > self.count:
                raise Unreadable("the freelist loops")
            page = self.page(trunk)
            out.add(trunk)
            n = int.from_bytes(page[4:8], "big")
            if n > self.usable // 4 - 2:
                raise Unreadable(f"freelist trunk {trunk} lists {n} leaves")
            out.update(np.frombuffer(page, dtype=">u4", count=n, offset=8).tolist())
            trunk = int.from_bytes(page[:4], "big")
        if len(out) != expected:
            raise Unreadable(f"the freelist holds {len(out)} pages, the header says {expected}")
        return out

    def overflow(self, number: int) -> set[int]:
        """The overflow pages of the cells of b-tree page `number` (every page of each chain)."""
        page = self.page(number)
        h = 100 if number == 1 else 0
        kind = page[h]
        if kind == TABLE_INTERIOR:
            return set()  # its cells hold no payload
        if kind not in (TABLE_LEAF, INDEX_LEAF, INDEX_INTERIOR):
            raise Unreadable(f"page {number} is not a b-tree page")
        u = self.usable
        most = u - 35 if kind == TABLE_LEAF else (u - 12) * 64 // 255 - 23
        least = (u - 12) * 32 // 255 - 23
        header = 8 if kind in LEAVES else 12
        out: set[int] = set()
        for i in range(int.from_bytes(page[h + 3:h + 5], "big")):
            at = int.from_bytes(page[h + header + 2 * i:h + header + 2 * i + 2], "big")
            if kind == INDEX_INTERIOR:
                at += 4  # the left child
            size, at = varint(page, at)
            if kind == TABLE_LEAF:
                _, at = varint(page, at)  # the rowid
            if size <= most:
                continue
            local = least + (size - least) % (u - 4)
            if local > most:
                local = least
            nxt = int.from_bytes(page[at + local:at + local + 4], "big")
            while nxt:
                if nxt in out or len(out) > self.count:
                    raise Unreadable(f"an overflow chain of page {number} loops")
                out.add(nxt)
                nxt = int.from_bytes(self.page(nxt)[:4], "big")
        return out

    def _kind(self, number: int) -> int:
        if not 1 <= number <= self.count:
            raise Unreadable(f"page {number} is beyond the file's {self.count}")
        return int(self._bytes[(number - 1) * self.page_size + (100 if number == 1 else 0)])

    def _kinds(self, pages: np.ndarray) -> np.ndarray:
        if len(pages) and ((pages < 1).any() or (pages > self.count).any()):
            raise Unreadable(f"a page number beyond the file's {self.count}")
        return self._bytes[(pages - 1) * self.page_size + np.where(pages == 1, 100, 0)]

    def _children(self, number: int) -> np.ndarray:
        """An interior page's children: each cell's left child, then the right-most pointer."""
        base = (number - 1) * self.page_size
        h = base + (100 if number == 1 else 0)
        b = self._bytes
        cells = int(b[h + 3]) << 8 | int(b[h + 4])
        if 12 + 2 * cells > self.page_size:
            raise Unreadable(f"page {number} claims {cells} cells")
        ptr = b[h + 12:h + 12 + 2 * cells].astype(np.int64)
        at = base + (ptr[0::2] << 8 | ptr[1::2])
        if cells and (at.max() + 4 > base + self.page_size):
            raise Unreadable(f"page {number}: a cell lies outside the page")
        left = (b[at].astype(np.int64) << 24 | b[at + 1].astype(np.int64) << 16 | b[at + 2].astype(np.int64) << 8
                | b[at + 3].astype(np.int64))
        right = int.from_bytes(bytes(b[h + 8:h + 12]), "big")
        return np.append(left, right)


def leaf_rowids(page: bytes, number: int) -> list[int]:
    """The rowids of the cells of a table-leaf page (file format §1.6: a table b-tree leaf cell starts with the
    payload size and the rowid, two varints); ValueError when it is not a table leaf."""
    header = 100 if number == 1 else 0
    if not page or page[header] != TABLE_LEAF:
        raise ValueError(f"page {number} is not a table leaf")
    cells = int.from_bytes(page[header + 3:header + 5], "big")
    out = []
    for i in range(cells):
        at = int.from_bytes(page[header + 8 + 2 * i:header + 10 + 2 * i], "big")
        _, at = varint(page, at)
        rowid, _ = varint(page, at)
        out.append(rowid - (1 << 64) if rowid >= 1 << 63 else rowid)
    return out


def varint(buf: bytes, at: int) -> tuple[int, int]:
    """SQLite's big-endian variable-length integer at `at`: (value, the offset after it)."""
    value = 0
    for i in range(8):
        b = buf[at + i]
        value = (value << 7) | (b & 0x7F)
        if b < 0x80:
            return value, at + i + 1
    return (value << 8) | buf[at + 8], at + 9
