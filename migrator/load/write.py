"""Writing one batch: orphans, COPY (bisecting to the offending rows if the server refuses), ledger — one transaction.

A batch travels as one `Converted` (rows, keys, raws, quarantine, fixups): the orphan filter and the bisection
take rows out of it into its quarantine or fixups, and what is left is what the ledger counts.
"""

from __future__ import annotations

from dataclasses import replace

import asyncpg

from migrator import ledger
from migrator.catalog import schema as cat
from migrator.context import RunContext
from migrator.convert.table import Converted, TableConverter, row_json
from migrator.errors import PreflightError
from migrator.plan.model import TablePlan
from migrator.targets import postgres as pgt

# what the server refuses because of one row's values (bisected down to that row and quarantined with the reason);
# ProgramLimitExceeded: e.g. a key too large for its btree index, JSON nested deeper than the server parses
REJECTED_BY_SERVER = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError,
                      asyncpg.ProgramLimitExceededError)


class BatchWriter:
    """Commits batches of one table (one ledger unit), each with its ledger row, quarantined rows and fixups."""

    def __init__(self, ctx: RunContext, conn: asyncpg.Connection, table: TablePlan, unit: str):
        self.ctx = ctx
        self.conn = conn
        self.table = table
        self.unit = unit
        self.strict = TableConverter(table, ctx.plan.policies, strict_json=True) if table.action == "load" else None
        self.columns = [c.name for c in table.copy_columns]

    async def write(self, batch_no: int, item) -> None:
        """Orphan filter + COPY + ledger row, all in one transaction."""
        conv = _whole_table_quarantine(self.table, item.raws) if self.table.action == "quarantine" else item.converted
        batch = Converted(conv.rows, conv.keys, conv.raws, list(conv.quarantine), list(conv.fixups))
        async with self.conn.transaction():
            if batch.rows:
                batch = await self.orphans(batch)
            if batch.rows:
                await self._copy(batch, batch)
            gone = {q[0] for q in batch.quarantine}  # a quarantined row keeps its original values: no fixups for it
            await ledger.record_batch(self.conn, unit=self.unit, batch_no=batch_no,
                                      snapshot_id=self.ctx.snapshot.snapshot_id, first_key=item.first_key,
                                      last_key=item.last_key, rows=len(item.raws) - len(batch.quarantine),
                                      nbytes=item.nbytes, quarantine=batch.quarantine,
                                      fixups=[f for f in batch.fixups if f[0] not in gone])

    async def orphans(self, batch: Converted) -> Converted:
        """Rows whose parent is not in the target: quarantined, or the reference set NULL (ON DELETE SET NULL)."""
        for fk in self.table.fks:
            if fk["column"] in self.columns and batch.rows:
                batch = await self._orphans_of(fk, batch)
        ref = self.table.self_ref
        if ref and ref["column"] in self.columns and ref["ref_column"] in self.columns:
            fk = {**ref, "ref_table": self.table.name, "self": True}
            before = -1
            while batch.rows and len(batch.rows) != before:  # the children of a row quarantined just now, too
                before = len(batch.rows)
                batch = await self._orphans_of(fk, batch)
        return batch

    async def _orphans_of(self, fk: dict, batch: Converted) -> Converted:
        idx = self.columns.index(fk["column"])
        missing = await self._missing_parents(fk, {r[idx] for r in batch.rows if r[idx] is not None})
        if fk.get("self"):  # parents in this very batch arrive with it
            own = self.columns.index(fk["ref_column"])
            missing -= {str(r[own]) for r in batch.rows}
        return self._drop_orphans(fk, idx, missing, batch) if missing else batch

    async def _missing_parents(self, fk: dict, values: set) -> set:
        if not values:
            return set()
        parent = next((t for t in self.ctx.plan.tables if t.name == fk["ref_table"]), None)
        ref_type = next((c.target_type for c in parent.columns if c.name == fk["ref_column"]), "text") \
            if parent else "text"
        schema = cat.qi(self.ctx.plan.schema)
        sql = (f"SELECT x FROM unnest($1::text[]) AS x WHERE NOT EXISTS (SELECT 1 FROM {schema}."
               f"{cat.qi(fk['ref_table'])} p WHERE p.{cat.qi(fk['ref_column'])} = x::{ref_type})")
        return {r[0] for r in await self.conn.fetch(sql, [str(v) for v in values])}

    def _drop_orphans(self, fk: dict, idx: int, missing: set, batch: Converted) -> Converted:
        """The batch without its orphans (or with their reference set NULL); they go to its quarantine/fixups."""
        set_null = fk["on_delete"] == "SET NULL" and self.ctx.plan.policies.get("orphan_set_null") == "set_null"
        kept = replace(batch, rows=[], keys=[], raws=[])
        for row, key, raw in zip(batch.rows, batch.keys, batch.raws):
            value = row[idx]
            if value is None or str(value) not in missing:
                kept.rows.append(row), kept.keys.append(key), kept.raws.append(raw)
            elif set_null:
                kept.rows.append(row[:idx] + (None,) + row[idx + 1:]), kept.keys.append(key), kept.raws.append(raw)
                kept.fixups.append((key, fk["column"], "orphan_set_null", "set_null", ledger.dumps(value)))
            elif self.ctx.settings.orphans == "fail":
                raise PreflightError(f"{self.table.name} row {key} points at a missing {fk['ref_table']}",
                                     detail=f"{fk['column']} = {value!r}",
                                     hint="use --orphans=quarantine to keep such rows aside, or delete them in HridaAI")
            else:
                kept.quarantine.append((key, f"orphan: {fk['column']} -> {fk['ref_table']}.{fk['ref_column']} "
                                             f"{value!r} does not exist", "orphan", fk["column"], self.row_json(raw)))
        return kept

    def row_json(self, raw: tuple) -> str:
        return (self.strict or TableConverter(self.table, self.ctx.plan.policies)).row_json(raw)

    async def _copy(self, part: Converted, batch: Converted) -> None:
        """COPY `part` of `batch` in a savepoint; if the server refuses, bisect down to the rows it refuses (they
        go to the batch's quarantine, or in a strict conversion with its fixups)."""
        try:
            async with self.conn.transaction():
                await pgt.copy_rows(self.conn, schema=self.ctx.plan.schema, table=self.table.name,
                                    columns=self.columns, rows=part.rows)
            return
        except REJECTED_BY_SERVER as exc:
            if len(part.rows) == 1:
                await self._single(part.rows[0], part.keys[0], part.raws[0], exc, batch)
                return
        mid = len(part.rows) // 2
        for half in (slice(None, mid), slice(mid, None)):
            await self._copy(Converted(part.rows[half], part.keys[half], part.raws[half]), batch)

    async def _single(self, row: tuple, key: str, raw: tuple, exc: Exception, batch: Converted) -> None:
        """A row the server refused: classify it strictly (e.g. invalid JSON) or quarantine it with the error."""
        strict: Converted = self.strict.convert([raw])
        if strict.rows and strict.rows[0] != row:
            try:
                async with self.conn.transaction():
                    await pgt.copy_rows(self.conn, schema=self.ctx.plan.schema, table=self.table.name,
                                        columns=self.columns, rows=strict.rows)
                batch.fixups[:] = [f for f in batch.fixups if f[0] != key] + strict.fixups
                return
            except REJECTED_BY_SERVER as again:
                exc = again
        if strict.quarantine:
            batch.quarantine.extend(strict.quarantine)
            return
        batch.quarantine.append((key, f"rejected by PostgreSQL: {exc.__class__.__name__}: {exc}"[:500],
                                 "server_reject", None, self.row_json(raw)))


def _whole_table_quarantine(table: TablePlan, raws: list[tuple]) -> Converted:
    """Every row of a table the target schema does not have, quarantined under its rowid."""
    columns = [c.name for c in table.columns if c.source_type is not None]
    return Converted(quarantine=[(ledger.dumps([raw[0]]), "table is not in HridaAI's schema at this revision",
                                  "table_not_in_target", None, row_json(columns, raw)) for raw in raws])
