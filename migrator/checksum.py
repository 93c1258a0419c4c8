"""Canonical row hashing: the same digest for a value whether it comes from the snapshot or from PostgreSQL.

A table's checksum is order-independent: 256 buckets (by key hash) of (row count, sum of row digests mod 2^128),
so a difference can be localised to a bucket and then to keys without holding the whole table in memory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable

MOD = 1 << 128
BUCKETS = 256


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


_PLAIN = {str, int, bool, type(None)}


def row_digest(values: Iterable[Any]) -> int:
    """128-bit digest of a row's values.

    Rows of only str/int/bool/NULL (nearly all) hash their tuple repr, which is unambiguous for those types (repr
    quotes and escapes strings, and 1, True and '1' differ) and computed in C; other rows hash length-prefixed
    type-tagged canonical bytes of each value.
    """
    values = tuple(values)
    if set(map(type, values)) <= _PLAIN:
        data = b"P" + repr(values).encode("utf-8", "surrogatepass")
        return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "little")
    h = hashlib.blake2b(b"C", digest_size=16)
    for v in values:
        b = canon(v)
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return int.from_bytes(h.digest(), "little")


def bucket_of(key: str) -> int:
    """Bucket of a row key."""
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=2).digest()[0]


@dataclass
class TableSum:
    """Order-independent checksum of a table."""

    count: int = 0
    buckets: list[list[int]] = field(default_factory=lambda: [[0, 0] for _ in range(BUCKETS)])

    def add(self, key: str, digest: int) -> None:
        """Fold one row in."""
        b = self.buckets[bucket_of(key)]
        b[0] += 1
        b[1] = (b[1] + digest) % MOD
        self.count += 1

    def total(self) -> str:
        """The table's checksum as hex."""
        acc = 0
        for i, (n, s) in enumerate(self.buckets):
            acc = (acc + s * (2 * i + 1) + n) % MOD
        return f"{acc:032x}"

    def differing_buckets(self, other: "TableSum") -> set[int]:
        """Buckets whose count or sum differ."""
        return {i for i in range(BUCKETS) if self.buckets[i] != other.buckets[i]}
