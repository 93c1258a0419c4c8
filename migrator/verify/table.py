"""One side of one table for verify: every row read, keyed, hashed into a TableSum, a batch at a time.

The source side reads the snapshot and converts each batch with the same TableConverter the load uses; the target
side reads PostgreSQL with an asyncpg cursor. Both run as plain functions so that verify can hand them to worker
processes (the two cores then hash two tables, or both sides of one, at once); memory stays one batch deep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import compress
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Sequence

from migrator import ledger, pgread
from migrator.catalog import schema as cat
from migrator.convert.table import TableConverter
from migrator.plan.model import TablePlan
from migrator.sources import sqlite as src
from migrator.verify.checksum import TableSum, batch_digests, buckets_of

FIRST_ROWS = 200
MAX_ROWS = 10_000
BATCH_BYTES = 8 << 20


@dataclass
class Batch:
    """Rows of one batch: keys, the values column by column, and (source) keys the converter quarantined."""

    keys: list[str]
    columns: list[Sequence]
    quarantined: list[str] = field(default_factory=list)
    read: int = 0
    nbytes: int = 0  # size, set by whoever hashed the batch (sizes the next read)


@dataclass
class SideResult:
    """What one side of a table measured."""

    rows: int
    sums: TableSum
    sample: list[tuple[str, tuple]] = field(default_factory=list)
    unledgered: list[str] = field(default_factory=list)  # converter-quarantined keys the ledger does not list


def fast_keys(values: Sequence) -> list[str] | None:
    """ledger.dumps([v]) for each value when all are ASCII text or all ints (C-speed), else None."""
    types = set(map(type, values))
    if types == {str} and all(map(str.isascii, values)):
        return ["[" + e + "]" for e in map(encode_basestring_ascii, values)]
    if types == {int}:
        return ["[%d]" % v for v in values]
    return None


def source_keys(conv: TableConverter, raws: Sequence[tuple]) -> list[str]:
    """conv.key_of for every raw row (single-column keys of ASCII text or ints without per-row JSON)."""
    index = {c: i for i, c in enumerate(conv.source_columns)}
    picks = [index[c] for c in conv.table.key or [] if c in index]
    if len(picks) <= 1:
        col = [r[1 + picks[0]] for r in raws] if picks else [r[0] for r in raws]
        keys = fast_keys(col)
        if keys is not None:
            return keys
    return [conv.key_of(r) for r in raws]


def target_keys(key_columns: list[Sequence], n: int) -> list[str]:
    """ledger.dumps(list(key values)) for every target row."""
    if len(key_columns) == 1:
        keys = fast_keys(key_columns[0])
        if keys is not None:
            return keys
    if not key_columns:
        return [ledger.dumps([])] * n
    return [ledger.dumps(list(vals)) for vals in zip(*key_columns)]


def row_keys(t: TablePlan, batch: Batch, digests: Sequence[int]) -> list[str]:
    """The keys rows are bucketed and reported by: the table's key, or for a table without one (no primary key, no
    unique index the source satisfies) the row's own digest, so both sides compare as multisets of full rows."""
    if t.key:
        return batch.keys
    return ["row:%032x" % d for d in digests]


def source_batches(lite, t: TablePlan, conv: TableConverter, overrides: dict[str, dict[str, Any]]
                   ) -> Iterator[Batch]:
    """Converted batches of the snapshot's rows, with the ledger's overrides applied (the load's orphan_set_null
    fixups, the paths `migrate files` rewrote); each about BATCH_BYTES once the consumer has set the previous
    batch's nbytes."""
    after, n = src.FIRST, FIRST_ROWS
    idx = {c: i for i, c in enumerate(conv.columns)}
    while True:
        raws, after = src.read_batch(lite, t.name, conv.source_columns, after=after, max_rows=n, with_size=False)
        if not raws:
            return
        res = conv.convert(raws)
        keys = source_keys(conv, res.raws)
        columns = list(zip(*res.rows)) if res.rows else [() for _ in conv.columns]
        if overrides and not overrides.keys().isdisjoint(keys):
            columns = [list(c) for c in columns]
            _override(keys, columns, idx, overrides)
        batch = Batch(keys, columns, [q[0] for q in res.quarantine], len(raws))
        yield batch
        n = next_rows(batch, n)


def next_rows(batch: Batch, n: int) -> int:
    """Rows for the next read: about BATCH_BYTES at this batch's size per row, within [50, MAX_ROWS]."""
    if not batch.nbytes:
        return n
    return max(50, min(MAX_ROWS, BATCH_BYTES * max(len(batch.keys), 1) // batch.nbytes))


def _override(keys: list[str], columns: list[list], idx: dict[str, int], overrides: dict[str, dict[str, Any]]
              ) -> None:
    """The values the ledger says the target holds instead (a NULLed orphan reference, an object storage URI)."""
    for i, key in enumerate(keys):
        for column, value in overrides.get(key, {}).items():
            columns[idx[column]][i] = value


def drop(batch: Batch, q_keys: set[str]) -> Batch:
    """The batch without rows the ledger quarantined."""
    if not q_keys:
        return batch
    keep = [k not in q_keys for k in batch.keys]
    if all(keep):
        return batch
    return Batch(list(compress(batch.keys, keep)), [list(compress(c, keep)) for c in batch.columns],
                 batch.quarantined, batch.read)


def source_side(db_path: Path, t: TablePlan, policies: dict, q_keys: set[str], overrides: dict[str, dict[str, Any]],
                k: int, seed: int) -> SideResult:
    """Count, checksum and sample (k rows, reservoir) the snapshot side of a table."""
    conv = TableConverter(t, policies)
    result = SideResult(0, TableSum())
    rng, seen = random.Random(seed), 0
    lite = src.connect(db_path, immutable=True)
    try:
        for batch in source_batches(lite, t, conv, overrides):
            result.rows += batch.read
            result.unledgered += [q for q in batch.quarantined if q not in q_keys]
            kept = drop(batch, q_keys)
            digests, batch.nbytes = batch_digests(kept.columns, len(kept.keys))
            result.sums.add_many(buckets_of(row_keys(t, kept, digests)), digests)
            seen = _reservoir(result.sample, kept, k, rng, seen)
    finally:
        lite.close()
    return result


def _reservoir(sample: list, batch: Batch, k: int, rng: random.Random, seen: int) -> int:
    """Algorithm R over the batch's rows; returns the number of rows seen so far."""
    for i, key in enumerate(batch.keys):
        seen += 1
        if len(sample) < k:
            sample.append((key, tuple(c[i] for c in batch.columns)))
        elif rng.random() * seen < k:
            sample[rng.randrange(k)] = (key, tuple(c[i] for c in batch.columns))
    return seen


async def target_batches(conn, schema: str, t: TablePlan) -> AsyncIterator[Batch]:
    """Batches of the target's rows (key columns first), about BATCH_BYTES each, in one read-only transaction."""
    keys = t.key or []
    cols = [c.name for c in t.copy_columns]
    select = ", ".join(cat.qi(c) for c in keys + cols)
    n = FIRST_ROWS
    async with pgread.block(conn, readonly=True):
        cur = await conn.cursor(f"SELECT {select} FROM {cat.qi(schema)}.{cat.qi(t.name)}")
        while True:
            recs = await cur.fetch(n)
            if not recs:
                return
            columns = list(zip(*recs)) if keys or cols else []
            batch = Batch(target_keys(columns[:len(keys)], len(recs)), columns[len(keys):], read=len(recs))
            yield batch
            n = next_rows(batch, n)


async def target_sum(conn, schema: str, t: TablePlan) -> SideResult:
    """Count and checksum the target side of a table on an open connection."""
    result = SideResult(0, TableSum())
    async for batch in target_batches(conn, schema, t):
        digests, batch.nbytes = batch_digests(batch.columns, batch.read)
        result.sums.add_many(buckets_of(row_keys(t, batch, digests)), digests)
        result.rows += batch.read
    return result

