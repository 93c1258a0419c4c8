"""`migrate catch-up`: bring a target that `migrate run` loaded from snapshot S1 to a newer snapshot S2 of the same
install, writing only the rows that changed (the final short window of a low-downtime cutover; repeatable while
HridaAI still runs).

What it does, each step once (a ledger step named after S2, committed with its writes, so a killed catch-up run
again continues after the last committed step):

* refuses, before writing anything (exit 4): a target whose run is not finished, or that holds another snapshot; S2
  at another alembic revision (HridaAI was upgraded in between); a target written by someone else since (a table's
  row count is not what the ledger left); changes it cannot apply yet (a table without a key, the vector store);
* deletes, in reverse FK order: the rows S2 no longer has (a row whose key changed: its old key), with the target's
  ON DELETE rules;
* upserts, in FK order: new and changed rows, converted under the run's policies with the load's rules (orphans,
  quarantine, fixups); a row quarantined before whose source was fixed is loaded, a row that now fails is removed
  from the target and quarantined; their ledger records replace the old ones;
* sequences, ANALYZE of the changed tables, then the run is moved to S2 (its last commit).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import asyncpg

from migrator import ledger, snapshot as snap
from migrator.catalog import schema as cat
from migrator.catchup import pages, steps as steps_mod, vectors as catchup_vectors
from migrator.catchup.delta import TableDelta, candidates_delta, table_delta
from migrator.context import RunContext
from migrator.convert.table import Converted, TableConverter
from migrator.errors import PreflightError
from migrator.load.write import REJECTED_BY_SERVER, BatchWriter
from migrator.plan.model import TablePlan
from migrator.snapshot import Snapshot
from migrator.sources import sqlite as src
from migrator.sources.chroma import direct as chroma_direct
from migrator.targets import postgres as pgt
from migrator.vectors import plan as vectors_plan

PREFIX = "catchup:"


@dataclass
class CatchUpReport:
    """What a catch-up changed, per table, and where the target now is."""

    from_snapshot: str
    to_snapshot: str
    tables: dict[str, dict] = field(default_factory=dict)
    vectors: dict = field(default_factory=dict)
    changed_tables: list[str] = field(default_factory=list)
    note: str = ""

    def asdict(self) -> dict:
        """JSON form."""
        return asdict(self)

    def asstr(self) -> str:
        """For people."""
        lines = [f"catch-up {self.from_snapshot} -> {self.to_snapshot}: {self.note}"]
        lines += [f"  {name:<28} +{t['inserted']} ~{t['updated']} -{t['deleted']} (quarantined {t['quarantined']})"
                  for name, t in sorted(self.tables.items()) if any(t.values())]
        v = self.vectors
        if v:
            lines.append(f"  vectors: collections +{len(v['added'])} -{len(v['removed'])}, {v['upserted']} chunks "
                         f"written, {v['deleted']} removed, {v['quarantined']} quarantined; "
                         f"{v['untouched']} collections not written in between (not read)")
        return "\n".join(lines)


async def execute(ctx: RunContext, old: Snapshot, *, statistics: bool = True,
                  durable: Callable[[], object] | None = None, plan_vectors: bool = False,
                  unchanged: Callable[[], object] | None = None) -> CatchUpReport:
    """Apply the delta from `old` (the snapshot the target holds) to ctx.snapshot (S2); see the module docstring.
    statistics=False: the changed tables' statistics are left to `analyze` (after READY: they do not decide what the
    target holds). durable: waits until the new snapshot's files are on disk (called, in a thread, before the target
    records that it holds it: after a crash the next catch-up must find those files as they were read).
    plan_vectors: ctx.plan was built without its vector part (vectors=False): it is built here, beside the delta.
    unchanged: raises when a source file the snapshot reads in place was written (called before the first write)."""
    new, plan = ctx.snapshot, ctx.plan
    report = CatchUpReport(old.snapshot_id, new.snapshot_id)
    conn = await pgt.connect(ctx.settings.target_url, bulk=True)
    try:
        await ledger.lock(conn, "the target")
        run = await _the_run(conn, old, new)
        if run["snapshot_id"] == new.snapshot_id:
            report.note = "already applied (the target holds this snapshot)"
            return report
        steps = await ledger.steps(conn)
        started = any(name.startswith(f"{PREFIX}{new.snapshot_id}:") for name in steps)
        policies = json.loads(steps["policies"]) if steps.get("policies") else plan.policies
        plan.policies = policies  # the run's, as the load converted S1 (the writer reads them from the plan)
        tables = sorted((t for t in plan.tables if t.action == "load"), key=lambda t: (t.order, t.name))
        clock = _Clock(ctx)
        deltas, _ = await asyncio.gather(asyncio.to_thread(_deltas, old, new, tables),
                                         _vector_plan(ctx) if plan_vectors else asyncio.sleep(0))
        clock.lap("delta")
        _refuse_an_unreadable_store(plan, old, new)
        _refuse_what_it_cannot_apply(old, new, tables, deltas)
        quarantined = {t.name: await ledger.quarantine_keys(conn, t.name) for t in tables}
        for t in tables:  # rows quarantined before: decided again (a parent may have arrived, a value been fixed)
            await asyncio.to_thread(_recheck_quarantined, new, t, deltas[t.name], quarantined[t.name])
        if not started:
            await _refuse_foreign_writes(conn, plan.schema, old, tables, quarantined)
        if unchanged is not None:
            unchanged()  # what was read in place is still the source: nothing written yet
        clock.lap("checks")
        done = steps_mod.Steps(conn, new.snapshot_id, set(steps), ctx.progress)
        for t in reversed(tables):
            await done.run(f"{PREFIX}{new.snapshot_id}:delete:{t.name}",
                           lambda t=t: _delete(conn, plan.schema, t, deltas[t.name].deleted))
        for t in tables:
            writer = BatchWriter(ctx, conn, t, t.name)
            counts = await done.run(f"{PREFIX}{new.snapshot_id}:upsert:{t.name}",
                                    lambda t=t, w=writer: _upsert(conn, w, t, deltas[t.name], new, policies))
            d = deltas[t.name]
            report.tables[t.name] = {"inserted": len(d.inserted), "updated": len(d.updated),
                                     "deleted": len(d.deleted), "quarantined": (counts or {}).get("quarantined", 0)}
        changed = [t for t in tables if deltas[t.name].changes]
        clock.lap("rows")
        report.vectors = await catchup_vectors.apply(ctx, old, policies)
        clock.lap("vectors")
        if durable is not None:
            await asyncio.to_thread(durable)
        await _finish(conn, plan.schema, run["run_id"], new)
        report.changed_tables = [t.name for t in changed]
        if statistics:
            await analyze(conn, plan.schema, report.changed_tables)
        clock.lap("finish")
        report.note = f"{sum(deltas[t.name].changes for t in tables)} rows changed in {len(changed)} tables"
        return report
    finally:
        await pgt.close_quietly(conn)


class _Clock:
    """Where a catch-up's time goes: a `catch-up` progress event per phase with its seconds."""

    def __init__(self, ctx: RunContext):
        self.ctx, self.t = ctx, time.monotonic()

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.ctx.progress.event("catch-up", phase=phase, seconds=round(now - self.t, 3))
        self.t = now


async def _the_run(conn: asyncpg.Connection, old: Snapshot, new: Snapshot) -> dict:
    run = await ledger.current_run(conn) if await ledger.exists(conn) else None
    if run is None:
        raise PreflightError("the target has no run to catch up", hint="catch-up follows a finished `migrate run` "
                             "with the same --work-dir and target")
    if run["snapshot_id"] not in (old.snapshot_id, new.snapshot_id):
        raise PreflightError("the target holds another snapshot than this work dir's",
                             detail=f"target: {run['snapshot_id']}, work dir: {old.snapshot_id}",
                             hint="use the --work-dir of the run that loaded this target")
    if run["state"] != "done":
        raise PreflightError("the target's run is not finished", hint="`migrate run --resume` first, then catch-up")
    if old.source_revision != new.source_revision:
        raise PreflightError("HridaAI's database is at another revision than when it was loaded",
                             detail=f"alembic {old.source_revision} -> {new.source_revision}: HridaAI was upgraded "
                                    "in between", hint="migrate again into an empty target (`migrate run` with a "
                                                       "new --work-dir), or downgrade HridaAI to the loaded release")
    return run


def _deltas(old: Snapshot, new: Snapshot, tables: list[TablePlan]) -> dict[str, TableDelta]:
    """Each table's delta: from the rows on the pages that differ between the two files where that is sound, by the
    whole merge otherwise."""
    a, b = (src.connect(s.db_path, immutable=True) for s in (old, new))
    try:
        by_page = pages.Pages.open(old.db_path, new.db_path, a, b, known=(new.page_diffs or {}).get(snap.DB_NAME))
        deltas = {}
        for t in tables:
            columns = _columns(a, b, t)
            rows = by_page.candidates(t.name) if by_page is not None else None
            if rows == ([], []):
                d = TableDelta(t.name, keyed=bool(t.key))
            else:
                d = candidates_delta(a, b, t, columns, *rows) if rows is not None else None
            deltas[t.name] = d if d is not None else table_delta(a, b, t, columns)
        _recheck_children(b, tables, deltas)
        return deltas
    finally:
        a.close()
        b.close()


def _recheck_quarantined(new: Snapshot, t: TablePlan, d: TableDelta, keys: set[str]) -> None:
    if not keys or not t.key:
        return
    written = set(d.inserted) | set(d.updated)
    where = " AND ".join(f"{cat.qi(k)} = ?" for k in t.key)
    lite = src.connect(new.db_path, immutable=True)
    try:
        for key in keys:
            row = lite.execute(f"SELECT rowid FROM {cat.qi(t.name)} WHERE {where}", json.loads(key)).fetchone()
            if row is not None and row[0] not in written:
                d.updated.append(row[0])
                written.add(row[0])
    finally:
        lite.close()


def _recheck_children(new: sqlite3.Connection, tables: list[TablePlan], deltas: dict[str, TableDelta]) -> None:
    """Rows of S2 whose parent row is deleted (or may end quarantined) are written again, so that the load's orphan
    rules decide them as a fresh load of S2 would (the target's ON DELETE rules may already have removed them):
    unchanged children of a deleted chat become orphans, quarantined or set NULL. FK order: their own children too."""
    removed: dict[str, set] = {}
    for t in tables:  # FK order: parents first
        d = deltas[t.name]
        gone = {json.loads(k)[0] for k in d.deleted} if len(t.key) == 1 else set()
        written = set(d.inserted) | set(d.updated)
        for fk in t.fks:
            parent = next((p for p in tables if p.name == fk["ref_table"]), None)
            values = removed.get(fk["ref_table"], set())
            if parent is None or parent.key != [fk["ref_column"]] or not values:
                continue
            for part in _chunks(sorted(values, key=str), 900):
                for (rowid, key) in new.execute(
                        f"SELECT rowid, {cat.qi(t.key[0]) if len(t.key) == 1 else 'NULL'} FROM {cat.qi(t.name)} "
                        f"WHERE {cat.qi(fk['column'])} IN ({','.join('?' * len(part))})", part):
                    if rowid not in written:
                        d.updated.append(rowid)
                        written.add(rowid)
                    if key is not None:
                        gone.add(key)
        if len(t.key) == 1 and written:
            gone |= _key_values(new, t, written)
        removed[t.name] = gone


def _key_values(new: sqlite3.Connection, t: TablePlan, rowids: set[int]) -> set:
    out: set = set()
    for part in _chunks(sorted(rowids), 900):
        out |= {r[0] for r in new.execute(f"SELECT {cat.qi(t.key[0])} FROM {cat.qi(t.name)} WHERE rowid IN "
                                          f"({','.join('?' * len(part))})", part)}
    return out


def _chunks(values: list, n: int):
    for i in range(0, len(values), n):
        yield values[i:i + n]


def _columns(a: sqlite3.Connection, b: sqlite3.Connection, t: TablePlan) -> list[str]:
    present = {c.name for c in src.columns(a, t.name)} & {c.name for c in src.columns(b, t.name)}
    return [c.name for c in t.columns if c.source_type is not None and c.name in present]


def _refuse_what_it_cannot_apply(old: Snapshot, new: Snapshot, tables: list[TablePlan],
                                 deltas: dict[str, TableDelta]) -> None:
    keyless = [t.name for t in tables if not deltas[t.name].keyed and deltas[t.name].changes]
    if keyless:
        raise PreflightError(f"rows changed in tables without a key: {', '.join(keyless)}",
                             hint="this version's catch-up cannot match such rows in the target: migrate again "
                                  "into an empty target")
    changed = _vector_changes(old, new)
    if changed:
        raise PreflightError(f"the Chroma store changed in a way catch-up cannot follow: {changed}",
                             hint="migrate again into an empty target")


async def _vector_plan(ctx: RunContext) -> None:
    """The plan's vector part (the Chroma store described, id collisions found): in a thread of its own, with its
    own event loop, while the delta is found."""
    await asyncio.to_thread(asyncio.run, vectors_plan.build(ctx.settings, ctx.snapshot, ctx.plan, scan=False))


def _refuse_an_unreadable_store(plan, old: Snapshot, new: Snapshot) -> None:
    """Before anything is written: the new snapshot's Chroma store must be one the plan could read (else its
    changes would be left out)."""
    if plan.vectors or new.vector_path is None or old.vector_path is None:
        return
    found = [c for c in plan.errors if c.code.startswith("vector")]
    raise PreflightError("the new snapshot's Chroma store cannot be read: its changes cannot be carried",
                         detail="; ".join(f"{c.code}: {c.message}" for c in found) or None,
                         hint=next((c.hint for c in found if c.hint), "run `migrate plan` for the reason"))


def _vector_changes(old: Snapshot, new: Snapshot) -> str:
    """Why the Chroma store's changes cannot be carried ('' when they can, or when there are none): a store that
    appeared or disappeared, or one the direct reader does not know (then only an unchanged one passes)."""
    if (old.vector_path is None) != (new.vector_path is None):
        return "a vector store appeared or disappeared"
    if old.vector_path is None:
        return ""
    a, b = chroma_direct.open_store(old.vector_path), chroma_direct.open_store(new.vector_path)
    try:
        if a is None or b is None:
            return "" if _files(old) == _files(new) else "its files differ, in a layout the direct reader does not know"
        return ""
    finally:
        for store in (a, b):
            if store is not None:
                store.close()


def _files(s: Snapshot) -> list:
    return sorted((f["path"], snap.identity(f)) for f in s.files if f["path"].startswith("vector_db/"))


async def _refuse_foreign_writes(conn: asyncpg.Connection, schema: str, old: Snapshot, tables: list[TablePlan],
                                 quarantined: dict[str, set[str]]) -> None:
    """Each table holds what the ledger left: S1's rows but the quarantined ones. HridaAI started on the target too
    early writes rows the ledger did not."""
    for t in tables:
        want = old.row_counts.get(t.name, 0) - len(quarantined[t.name])
        have = await conn.fetchval(f"SELECT count(*) FROM {cat.qi(schema)}.{cat.qi(t.name)}")
        if have != want:
            raise PreflightError(f"the target was written since it was loaded: {t.name} has {have} rows, the "
                                 f"migration left {want}", hint="was HridaAI started on the target before the "
                                 "catch-up? Stop it; migrate again into an empty target")


async def _delete(conn: asyncpg.Connection, schema: str, t: TablePlan, keys: list[str]) -> dict | None:
    if not keys:
        return None
    await _delete_keys(conn, schema, t, keys)
    await ledger.replace_row_records(conn, t.name, keys, [], [])
    return {"deleted": len(keys)}


async def _delete_keys(conn: asyncpg.Connection, schema: str, t: TablePlan, keys: list[str]) -> None:
    """Delete the target's rows of `keys` (ledger text), matching each key column as text."""
    values = [json.loads(k) for k in keys]
    cols = ", ".join(f"{cat.qi(k)}::text" for k in t.key)
    args = [[None if row[i] is None else str(row[i]) for row in values] for i in range(len(t.key))]
    unnest = ", ".join(f"${i + 1}::text[]" for i in range(len(t.key)))
    await conn.execute(f"DELETE FROM {cat.qi(schema)}.{cat.qi(t.name)} WHERE ({cols}) IN "
                       f"(SELECT * FROM unnest({unnest}))", *args)


async def _upsert(conn: asyncpg.Connection, writer: BatchWriter, t: TablePlan, d: TableDelta, new: Snapshot,
                  policies: dict) -> dict | None:
    rowids = d.inserted + d.updated
    if not rowids:
        return None
    lite = src.connect(new.db_path, immutable=True)
    try:
        raws = src.rows_by_rowid(lite, t.name, [c.name for c in t.columns if c.source_type is not None], rowids)
    finally:
        lite.close()
    conv: Converted = TableConverter(t, policies).convert(raws)
    touched = list(conv.keys) + [q[0] for q in conv.quarantine]
    batch = await writer.orphans(Converted(conv.rows, conv.keys, conv.raws, list(conv.quarantine), list(conv.fixups)))
    await _write_rows(conn, writer, t, batch)
    gone = [q[0] for q in batch.quarantine]
    if gone:  # loaded from S1, quarantined now: out of the target
        await _delete_keys(conn, writer.ctx.plan.schema, t, gone)
    await ledger.replace_row_records(conn, t.name, touched, batch.quarantine,
                                     [f for f in batch.fixups if f[0] not in set(gone)])
    return {"written": len(batch.rows), "quarantined": len(batch.quarantine)}


async def _write_rows(conn: asyncpg.Connection, writer: BatchWriter, t: TablePlan, batch: Converted) -> None:
    """INSERT ... ON CONFLICT (key) DO UPDATE, all rows at once; if the server refuses one, row by row in
    savepoints, the refused ones quarantined as the load does."""
    if not batch.rows:
        return
    sql = _upsert_sql(writer.ctx.plan.schema, t, writer.columns)
    try:
        async with conn.transaction():
            await conn.executemany(sql, batch.rows)
        return
    except REJECTED_BY_SERVER:
        pass
    kept = Converted([], [], [])
    for row, key, raw in zip(batch.rows, batch.keys, batch.raws):
        try:
            async with conn.transaction():
                await conn.execute(sql, *row)
            kept.rows.append(row), kept.keys.append(key), kept.raws.append(raw)
        except REJECTED_BY_SERVER as exc:
            batch.quarantine.append((key, f"rejected by PostgreSQL: {exc.__class__.__name__}: {exc}"[:500],
                                     "server_reject", None, writer.row_json(raw)))
    batch.rows[:], batch.keys[:], batch.raws[:] = kept.rows, kept.keys, kept.raws


def _upsert_sql(schema: str, t: TablePlan, columns: list[str]) -> str:
    names = ", ".join(cat.qi(c) for c in columns)
    params = ", ".join(f"${i + 1}" for i in range(len(columns)))
    rest = [c for c in columns if c not in t.key]
    action = ("DO UPDATE SET " + ", ".join(f"{cat.qi(c)} = EXCLUDED.{cat.qi(c)}" for c in rest)) if rest \
        else "DO NOTHING"
    return (f"INSERT INTO {cat.qi(schema)}.{cat.qi(t.name)} ({names}) VALUES ({params}) "
            f"ON CONFLICT ({', '.join(cat.qi(k) for k in t.key)}) {action}")


async def analyze(conn: asyncpg.Connection, schema: str, tables: list[str]) -> None:
    """Statistics of the tables a catch-up changed (execute(statistics=False) leaves them to this)."""
    for name in tables:
        await conn.execute(f"ANALYZE {cat.qi(schema)}.{cat.qi(name)}")


async def _finish(conn: asyncpg.Connection, schema: str, run_id: str, new: Snapshot) -> None:
    """Sequences past the new rows, then the run holds S2 (one commit)."""
    from migrator.catalog import capture

    sequences = (await capture.capture(conn, schema=schema)).sequences
    async with conn.transaction():
        await pgt.reset_sequences(conn, list(sequences), schema)
        await ledger.step_done(conn, f"{PREFIX}{new.snapshot_id}:done", new.snapshot_id)
        await ledger.move_run(conn, run_id, new.snapshot_id)
