"""Row digests: batch hashing agrees with per-value cells, tells every type and boundary apart, and keys match
ledger.dumps."""

from __future__ import annotations

import datetime as dt
import itertools
import random

from migrator import ledger
from migrator.verify import checksum as ck
from migrator.verify.table import fast_keys

VALUES = ["ab", "", "é\ud800", None, 0, 1, -7, 10 ** 30, ck.INT64 - 1, -ck.INT64, ck.INT64, True, False, 1.0,
          dt.date(2020, 1, 1), b"x", "1", "I1", b"1", "B1", "\x00", "é" * 700]


def _cells(col) -> list[tuple]:
    c = ck.column_cells(col)
    n = len(col)
    return list(zip(c.shapes, c.slots if c.slots is not None else [0] * n,
                    c.payloads if c.payloads is not None else [""] * n))


def test_every_value_has_its_own_digest():
    digests = [ck.row_digest((v,)) for v in VALUES]
    assert len(set(digests)) == len(VALUES)
    assert ck.row_digest(()) != ck.row_digest((None,))


def test_column_passes_match_the_per_value_cell():
    for combo in itertools.product(VALUES[:12], repeat=3):
        assert _cells(combo) == [ck.cell(v) for v in combo], combo
    rng = random.Random(7)
    for _ in range(5000):
        combo = rng.choices(VALUES, k=7)
        assert _cells(combo) == [ck.cell(v) for v in combo], combo


def test_boundaries_between_values_count():
    rows = [("ab", "c", 1), ("a", "bc", 1), ("ab", "c", "1"), ("ab", "c", True), ("ab", "c", None), ("ab", "c", ""),
            ("ab", "c", "I1"), ("é", "", 1), ("", "é", 1), ("", "", 0), ("", "", False), ("", "", None)]
    digests = [ck.row_digest(r) for r in rows]
    assert len(set(digests)) == len(rows)
    assert ck.batch_digests(list(zip(*rows)), len(rows))[0] == digests


def test_big_text_grouping_does_not_change_digests(monkeypatch):
    rng = random.Random(3)
    rows = [tuple(rng.choice(["a" * 600, "é" * 700, "x", "", None, 5, "\ud800z" * 300]) for _ in range(6))
            for _ in range(200)]
    want = [ck.row_digest(r) for r in rows]
    for big in (0, 512, 10 ** 9):
        monkeypatch.setattr(ck, "BIG_TEXT", big)
        assert ck.batch_digests(list(zip(*rows)), len(rows))[0] == want


def test_table_sums_ignore_order():
    rows = [(f"k{i}", i, "v" * i) for i in range(50)]
    a, b = ck.TableSum(), ck.TableSum()
    keys = [ledger.dumps([r[0]]) for r in rows]
    a.add_many(ck.buckets_of(keys), ck.batch_digests(list(zip(*rows)), len(rows))[0])
    for key, row in reversed(list(zip(keys, rows))):
        b.add(key, ck.row_digest(row))
    assert a.total() == b.total() and not a.differing_buckets(b)


def test_fast_keys_are_ledger_dumps():
    for values in (["a", 'b"c', "x\\y\n", "\x7f"], [1, 2, -5, 10 ** 20]):
        assert fast_keys(values) == [ledger.dumps([v]) for v in values]
    for values in (["é"], [True], [1, "a"], [None]):
        assert fast_keys(values) is None
