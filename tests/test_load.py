"""The load's batch writer on a real PostgreSQL, without the CLI: orphans (quarantined, or their reference set NULL),
a batch the server refuses bisected down to the refused row, and everything — rows, quarantine, fixups, ledger
row — committed in one transaction or not at all."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from migrator import ledger
from migrator.context import RunContext
from migrator.convert.table import TableConverter
from migrator.errors import PreflightError
from migrator.load.read import ReadBatch
from migrator.load.write import BatchWriter
from migrator.plan.model import ColumnPlan, Plan, TablePlan
from migrator.settings import build
from migrator.snapshot import Snapshot

DDL = ["CREATE TABLE parent (id text PRIMARY KEY)",
       "CREATE TABLE child (id text PRIMARY KEY, parent_id text REFERENCES parent (id) ON DELETE CASCADE, "
       "owner_id text REFERENCES parent (id) ON DELETE SET NULL, n integer CHECK (n >= 0), meta json)",
       "INSERT INTO parent VALUES ('p1')"]
COLUMNS = [("id", "TEXT", "text", False), ("parent_id", "TEXT", "text", True), ("owner_id", "TEXT", "text", True),
           ("n", "INTEGER", "integer", True), ("meta", "JSON", "json", True)]
FKS = [{"column": "parent_id", "ref_table": "parent", "ref_column": "id", "on_delete": "CASCADE"},
       {"column": "owner_id", "ref_table": "parent", "ref_column": "id", "on_delete": "SET NULL"}]
UNIT = "child"


def _plan(orphans: str = "quarantine") -> tuple[RunContext, TablePlan]:
    child = TablePlan("child", "load", rows=0, columns=[ColumnPlan(*c) for c in COLUMNS], key=["id"], fks=FKS,
                      batch_rows=100, batch_bytes=1 << 20, order=1)
    parent = TablePlan("parent", "load", columns=[ColumnPlan("id", "TEXT", "text", False)], key=["id"])
    policies = {"orphan_set_null": "set_null", "invalid_json": "reject"}
    plan = Plan("snap-1", None, [], "existing", None, "empty", "public", [parent, child], policies=policies,
                orphans=orphans)
    settings = build({"data_dir": None, "target_url": "postgresql://unused/x", "orphans": orphans}, env={})
    return RunContext(settings, plan, Snapshot("snap-1", "/nonexistent", None, {})), child


def _batch(ctx: RunContext, table: TablePlan, rows: list[tuple]) -> ReadBatch:
    raws = [(i + 1, *row) for i, row in enumerate(rows)]
    return ReadBatch(raws, raws[0][0], raws[-1][0], 100 * len(raws), TableConverter(table, ctx.plan.policies)
                     .convert(raws))


async def _write(url: str, rows: list[tuple], *, orphans: str = "quarantine") -> dict:
    ctx, child = _plan(orphans)
    conn = await asyncpg.connect(url)
    try:
        for stmt in DDL:
            await conn.execute(stmt)
        await ledger.ensure(conn)
        try:
            await BatchWriter(ctx, conn, child, UNIT).write(1, _batch(ctx, child, rows))
        except PreflightError as exc:
            error = exc
        else:
            error = None
        fetch = conn.fetch
        return {"error": error,
                "child": [tuple(r) for r in await fetch("SELECT id, parent_id, owner_id, n FROM child ORDER BY id")],
                "quarantine": [(json.loads(r[0]), r[1], r[2]) for r in await fetch(
                    "SELECT key, policy, reason FROM hridaai_migrate.quarantine ORDER BY key")],
                "fixups": [(json.loads(r[0]), r[1], r[2], r[3]) for r in await fetch(
                    "SELECT key, column_name, policy, action FROM hridaai_migrate.fixup ORDER BY key")],
                "batches": [tuple(r) for r in await fetch(
                    "SELECT unit, batch_no, rows, quarantined, fixups FROM hridaai_migrate.batch")]}
    finally:
        await conn.close()


def test_orphans_are_quarantined_or_set_null_with_their_ledger_row(target_url):
    got = asyncio.run(_write(target_url, [("c1", "p1", "p1", 1, '{"a": 1}'),
                                          ("c2", "p9", None, 2, None),  # its parent is not in the target
                                          ("c3", "p1", "p9", 3, None)]))  # ON DELETE SET NULL: kept, owner NULL
    assert got["error"] is None
    assert got["child"] == [("c1", "p1", "p1", 1), ("c3", "p1", None, 3)]
    assert [(k, p) for k, p, _ in got["quarantine"]] == [(["c2"], "orphan")]
    assert "parent_id -> parent.id 'p9' does not exist" in got["quarantine"][0][2]
    assert got["fixups"] == [(["c3"], "owner_id", "orphan_set_null", "set_null")]
    assert got["batches"] == [(UNIT, 1, 2, 1, 1)]  # source rows = loaded + quarantined, measured in one transaction


def test_a_refused_batch_is_bisected_to_the_refused_row(target_url):
    rows = [(f"c{i}", "p1", None, -1 if i == 5 else i, None) for i in range(8)]  # CHECK (n >= 0) refuses c5 only
    got = asyncio.run(_write(target_url, rows))
    assert [r[0] for r in got["child"]] == [f"c{i}" for i in range(8) if i != 5]
    assert [(k, p) for k, p, _ in got["quarantine"]] == [(["c5"], "server_reject")]
    assert "CheckViolationError" in got["quarantine"][0][2]
    assert got["batches"] == [(UNIT, 1, 7, 1, 0)]


def test_orphans_fail_leaves_nothing_of_the_batch(target_url):
    got = asyncio.run(_write(target_url, [("c1", "p1", None, 1, None), ("c2", "p9", None, 2, None)],
                             orphans="fail"))
    assert isinstance(got["error"], PreflightError) and "child row [\"c2\"] points at a missing parent" \
        in got["error"].message
    assert got["child"] == [] and got["quarantine"] == [] and got["batches"] == []  # the transaction rolled back


@pytest.mark.parametrize("bad_json", ['{"a": ', "not json"])
def test_invalid_json_refused_by_the_server_is_classified_strictly(target_url, bad_json):
    """The fast path sends JSON text as is; the server refuses it, and the strict conversion names the policy."""
    got = asyncio.run(_write(target_url, [("c1", "p1", None, 1, bad_json), ("c2", "p1", None, 2, "[]")]))
    assert [r[0] for r in got["child"]] == ["c2"]
    assert [(k, p) for k, p, _ in got["quarantine"]] == [(["c1"], "invalid_json")]
