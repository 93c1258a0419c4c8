"""Canonical row hashing: the same digest for a value whether it comes from the snapshot or from PostgreSQL.

A table's checksum is order-independent: 256 buckets (by key hash) of (row count, sum of row digests mod 2^128),
so a difference can be localised to a bucket and then to keys without holding the whole table in memory.

Rows are hashed a batch at a time, column by column, in C-speed passes. Each value becomes a cell: a shape, a
64-bit slot and a payload (a str):

    text            shape = its length in characters (>= 0)   slot 0      payload = the text
    NULL            shape -1                                  slot 0      payload empty
    int in int64    shape -2                                  slot = it   payload empty
    bool            shape -3                                  slot 0 / 1  payload empty
    anything else   shape = -4 - len(payload)                 slot 0      payload = canon() read as Latin-1

A row's digest is SHA-256 of a fixed-width header (column count, then each column's shape and slot) followed by the
UTF-8 (surrogatepass) of its payloads joined; sums keep its low 128 bits. UTF-8 with surrogatepass is injective and
the header says where every payload ends and what kind of value it holds, so two rows share a digest input only
when every value is equal in type and canonical form. A cell never depends on the other values of its batch.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import compress, repeat
from operator import is_, methodcaller
from typing import Any, Callable, Iterable, Sequence

MOD = 1 << 128
BUCKETS = 256
INT64 = 1 << 63
BIG_TEXT = 512  # characters per value from which a text column is encoded on its own
NoneType = type(None)
_DIGEST = methodcaller("digest")


@dataclass
class Cells:
    """One column's cells: shapes, slots (None: all 0) and payloads (None: all empty)."""

    shapes: list[int]
    slots: Sequence[int] | None = None
    payloads: Sequence[str] | None = None


def canon(value: Any) -> bytes:
    """Type-tagged canonical bytes of one converted value."""
    if value is None:
        return b"N"
    if value is True or value is False:
        return b"B1" if value else b"B0"
    if isinstance(value, int):
        return b"I" + str(value).encode()
    if isinstance(value, float):
        return b"F" + repr(value).encode()
    if isinstance(value, str):
        return b"S" + value.encode("utf-8", "surrogatepass")
    if isinstance(value, (dt.datetime, dt.date)):
        return b"D" + value.isoformat().encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"X" + bytes(value)
    return b"R" + repr(value).encode()


def cell(value: Any) -> tuple[int, int, str]:
    """(shape, slot, payload) of one value, as the module docstring lays out."""
    kind = type(value)
    if kind is str:
        return len(value), 0, value
    if value is None:
        return -1, 0, ""
    if kind is int and -INT64 <= value < INT64:
        return -2, value, ""
    if kind is bool:
        return -3, int(value), ""
    data = canon(value).decode("latin-1")
    return -4 - len(data), 0, data


def _generic(col: Sequence) -> Cells:
    cells = list(map(cell, col))
    return Cells([c[0] for c in cells], [c[1] for c in cells], [c[2] for c in cells])


def _texts(col: Sequence) -> Cells:
    return Cells(list(map(len, col)), None, col)


def _ints(col: Sequence) -> Cells:
    return Cells([-2] * len(col), col)


def _bools(col: Sequence) -> Cells:
    return Cells([-3] * len(col), col)


# kind of a column's non-NULL values -> (its cells in C-speed passes, a stand-in for NULL of that kind)
_KINDS: dict[type, tuple[Callable[[Sequence], Cells], Any]] = {str: (_texts, ""), int: (_ints, 0), bool: (_bools, False)}


def column_cells(col: Sequence) -> Cells:
    """The cells of one column (each exactly as cell() makes it); C-speed when the values are all of one usual
    kind (text, int64, bool) or NULL."""
    types = set(map(type, col))
    types.discard(NoneType)
    if not types:
        return Cells([-1] * len(col))
    kind = types.pop() if len(types) == 1 else None
    if kind not in _KINDS:
        return _generic(col)
    fast, null = _KINDS[kind]
    nulls = list(compress(range(len(col)), map(is_, col, repeat(None))))
    values = [null if v is None else v for v in col] if nulls else col
    if kind is int and not (-INT64 <= min(values) and max(values) < INT64):
        return _generic(col)
    cells = fast(values)
    for i in nulls:
        cells.shapes[i] = -1
    return cells


@lru_cache(maxsize=64)
def _header(ncols: int) -> Callable[..., bytes]:
    """Packs (column count, shape and slot of every column) into fixed-width bytes."""
    return struct.Struct(f"<{2 * ncols + 1}q").pack


def batch_digests(columns: Sequence[Sequence], n: int) -> tuple[list[int], int]:
    """Digests of n rows given column by column (all of length n; ints whose low 128 bits are the row's digest),
    and the rows' size (characters of text, 8 per other value)."""
    header_args: list[Iterable[int]] = [repeat(len(columns), n)]
    texts: list[tuple[Sequence[str], int]] = []
    size = 0
    for col in columns:
        cells = column_cells(col)
        header_args += [cells.shapes, repeat(0) if cells.slots is None else cells.slots]
        if cells.payloads is None:
            size += 8 * n
        else:
            texts.append((cells.payloads, sum(cells.shapes)))
            size += texts[-1][1]
    parts = [map(_header(len(columns)), *header_args)] + _utf8_parts(texts, n)
    rows = map(bytes.__add__, *parts) if len(parts) == 2 else map(b"".join, zip(*parts)) if len(parts) > 2 \
        else parts[0]
    return list(map(int.from_bytes, map(_DIGEST, map(hashlib.sha256, rows)), repeat("little"))), size


def _utf8_parts(texts: list[tuple[Sequence[str], int]], n: int) -> list[list[bytes]]:
    """Per row, the UTF-8 of its payloads in column order, as a few parts whose concatenation it is (UTF-8 of a
    concatenation is the concatenation of the UTF-8s): runs of small texts joined before encoding (one encode per
    row), big ones encoded on their own (so that one wide character does not widen a whole row)."""
    parts, run = [], []
    for payloads, chars in texts:
        if chars > BIG_TEXT * n:
            if run:
                parts.append(_utf8(list(map("".join, zip(*run)))) if len(run) > 1 else _utf8(run[0]))
                run = []
            parts.append(_utf8(payloads))
        else:
            run.append(payloads)
    if run:
        parts.append(_utf8(list(map("".join, zip(*run)))) if len(run) > 1 else _utf8(run[0]))
    return parts


def _utf8(texts: Sequence[str]) -> list[bytes]:
    """UTF-8 of every text, lone surrogates kept (surrogatepass); the plain codec first, as it is much faster."""
    try:
        return list(map(str.encode, texts))
    except UnicodeEncodeError:
        return list(map(str.encode, texts, repeat("utf-8"), repeat("surrogatepass")))


def row_digest(values: Iterable[Any]) -> int:
    """Digest of one row's values (the same as batch_digests gives it)."""
    values = tuple(values)
    return batch_digests([(v,) for v in values], 1)[0][0]


def bucket_of(key: str) -> int:
    """Bucket of a row key (CRC-32 of its UTF-8: buckets only localise differences, digests detect them)."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) & (BUCKETS - 1)


def buckets_of(keys: Iterable[str]) -> list[int]:
    """Buckets of many keys."""
    mask = BUCKETS - 1
    return [c & mask for c in map(zlib.crc32, map(str.encode, keys, repeat("utf-8"), repeat("surrogatepass")))]


@dataclass
class TableSum:
    """Order-independent checksum of a table."""

    count: int = 0
    buckets: list[list[int]] = field(default_factory=lambda: [[0, 0] for _ in range(BUCKETS)])

    def add(self, key: str, digest: int) -> None:
        """Fold one row in."""
        self.add_many([bucket_of(key)], [digest])

    def add_many(self, buckets: Sequence[int], digests: Sequence[int]) -> None:
        """Fold rows in, given their buckets and digests."""
        entries = self.buckets
        for b, d in zip(buckets, digests):
            entry = entries[b]
            entry[0] += 1
            entry[1] += d
        for entry in entries:
            entry[1] %= MOD
        self.count += len(digests)

    def merge(self, other: "TableSum") -> None:
        """Fold another part of the same table in."""
        for mine, theirs in zip(self.buckets, other.buckets):
            mine[0] += theirs[0]
            mine[1] = (mine[1] + theirs[1]) % MOD
        self.count += other.count

    def total(self) -> str:
        """The table's checksum as hex."""
        acc = 0
        for i, (n, s) in enumerate(self.buckets):
            acc = (acc + s * (2 * i + 1) + n) % MOD
        return f"{acc:032x}"

    def differing_buckets(self, other: "TableSum") -> set[int]:
        """Buckets whose count or sum differ."""
        return {i for i in range(BUCKETS) if self.buckets[i] != other.buckets[i]}
