"""Verify's table sides in parallel: `--jobs` worker processes, biggest work first.

Hashing and conversion are Python work that holds the GIL, so threads would share one core; worker processes
(spawned: they start clean, with no copy of the caller's event loop or connections) use them all. Each big table
gives two jobs (snapshot side, target side); the small tables go together in one bundle so that each worker opens
few connections. Results are small (a 256-bucket TableSum, the row count, the sample), whatever the table size.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from migrator.plan.model import TablePlan
from migrator.targets import postgres as pgt
from migrator.verify.table import SideResult, source_side, target_sum

SMALL_ROWS = 20_000
SMALL_BYTES = 16 << 20
ROW_COST = 400  # bytes a row's fixed per-row work is worth, for ordering jobs


@dataclass
class TableJob:
    """What a worker needs to measure one table's sides."""

    table: TablePlan
    q_keys: set[str]
    overrides: dict[str, dict]  # key -> {column: value the target holds instead} (ledger.source_overrides)
    seed: int
    size: int = 0  # estimated bytes, only for ordering


@dataclass
class Bundle:
    """Work for one worker call: (side, job) pairs, side 'source' or 'target'."""

    items: list[tuple[str, TableJob]] = field(default_factory=list)
    cost: float = 0.0


@dataclass(frozen=True)
class Sides:
    """Where both sides are, and what every job shares."""

    url: str
    schema: str
    db_path: Path
    policies: dict
    sample_size: int


def w_run_bundle(sides: Sides, bundle: Bundle) -> list[tuple[str, str, SideResult]]:
    """Measure every (side, table) of a bundle; runs in a worker process or thread."""
    out = [(side, job.table.name, source_side(sides.db_path, job.table, sides.policies, job.q_keys, job.overrides,
                                              sides.sample_size, job.seed))
           for side, job in bundle.items if side == "source"]
    targets = [job for side, job in bundle.items if side == "target"]
    if targets:
        out += asyncio.run(_targets(sides, targets))
    return out


async def _targets(sides: Sides, jobs: list[TableJob]) -> list[tuple[str, str, SideResult]]:
    conn = await pgt.connect(sides.url)
    try:
        return [("target", job.table.name, await target_sum(conn, sides.schema, job.table)) for job in jobs]
    finally:
        await conn.close()


async def table_sizes(conn, schema: str) -> dict[str, int]:
    """Bytes each target table takes (heap + TOAST), to start the biggest work first."""
    rows = await conn.fetch("SELECT c.relname, pg_table_size(c.oid) FROM pg_class c JOIN pg_namespace n "
                            "ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')", schema)
    return {name: size for name, size in rows}


def bundles(jobs: list[TableJob]) -> list[Bundle]:
    """Small tables in one bundle, each side of a big one alone; costliest first."""
    small, out = Bundle(), []
    for job in jobs:
        cost = job.size + ROW_COST * job.table.rows
        if job.table.rows < SMALL_ROWS and job.size < SMALL_BYTES:
            small.items += [("source", job), ("target", job)]
            small.cost += 2 * cost
            continue
        out.append(Bundle([("source", job)], 1.5 * cost))  # conversion makes the snapshot side dearer
        out.append(Bundle([("target", job)], cost))
    if small.items:
        out.append(small)
    return sorted(out, key=lambda b: -b.cost)


async def measure(sides: Sides, jobs: list[TableJob], executor: Executor) -> dict[str, dict[str, SideResult]]:
    """{table: {'source': SideResult, 'target': SideResult}} for every job, over `executor`'s workers (the verify's
    pool, which the vectors' checks share)."""
    work = bundles(jobs)
    out: dict[str, dict[str, SideResult]] = {job.table.name: {} for job in jobs}
    loop = asyncio.get_running_loop()
    futures = [loop.run_in_executor(executor, w_run_bundle, sides, b) for b in work]
    for results in await asyncio.gather(*futures):
        for side, name, result in results:
            out[name][side] = result
    return out

