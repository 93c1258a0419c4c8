"""Writing one batch: orphans, COPY (bisecting to the offending rows if the server refuses), ledger — one transaction."""

from __future__ import annotations

import asyncpg

from migrator import catalog as cat
from migrator import ledger
from migrator.errors import PreflightError
from migrator.plan.model import Plan, TablePlan
from migrator.convert.table import Converted, TableConverter
from migrator.settings import Settings
from migrator.targets import postgres as pgt

# what the server refuses because of one row's values (bisected down to that row and quarantined with the reason);
# ProgramLimitExceeded: e.g. a key too large for its btree index, JSON nested deeper than the server parses
REJECTED_BY_SERVER = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError,
                      asyncpg.ProgramLimitExceededError)


class BatchWriter:
    """Commits batches of one table, each with its ledger row, quarantined rows and fixups."""

    def __init__(self, conn: asyncpg.Connection, *, settings: Settings, plan: Plan, table: TablePlan, unit: str,
                 spec: dict, snapshot_id: str):
        self.conn = conn
        self.unit = unit
        self.settings = settings
        self.plan = plan
        self.table = table
        self.spec = spec
        self.snapshot_id = snapshot_id
        self.strict = TableConverter(table, plan.policies, strict_json=True) if table.action == "load" else None
        self.columns = [c.name for c in table.copy_columns]

    async def write(self, batch_no: int, item) -> None:
        """Orphan filter + COPY + ledger row, all in one transaction."""
        if self.table.action == "quarantine":
            conv = _whole_table_quarantine(self.table, item.raws)
        else:
            conv = item.converted
        async with self.conn.transaction():
            rows, keys, raws = conv.rows, conv.keys, conv.raws
            quarantine, fixups = list(conv.quarantine), list(conv.fixups)
            if rows:
                rows, keys, raws = await self._orphans(rows, keys, raws, quarantine, fixups)
            if rows:
                await self._copy(rows, keys, raws, quarantine, fixups)
            gone = {q[0] for q in quarantine}  # a quarantined row keeps its original values: no fixups for it
            fixups = [f for f in fixups if f[0] not in gone]
            await ledger.record_batch(self.conn, unit=self.unit, batch_no=batch_no,
                                      snapshot_id=self.snapshot_id, first_key=item.first_key, last_key=item.last_key,
                                      rows=len(item.raws) - len(quarantine), nbytes=item.nbytes,
                                      quarantine=quarantine, fixups=fixups)

    async def _orphans(self, rows, keys, raws, quarantine, fixups):
        """Rows whose parent is not in the target: quarantined, or the reference set NULL (ON DELETE SET NULL)."""
        for fk in self.table.fks:
            if fk["column"] in self.columns and rows:
                rows, keys, raws = await self._orphans_of(fk, rows, keys, raws, quarantine, fixups)
        ref = self.table.self_ref
        if ref and ref["column"] in self.columns and ref["ref_column"] in self.columns:
            fk = {**ref, "ref_table": self.table.name, "self": True}
            before = -1
            while rows and len(rows) != before:  # the children of a row quarantined just now are orphans too
                before = len(rows)
                rows, keys, raws = await self._orphans_of(fk, rows, keys, raws, quarantine, fixups)
        return rows, keys, raws

    async def _orphans_of(self, fk, rows, keys, raws, quarantine, fixups):
        idx = self.columns.index(fk["column"])
        missing = await self._missing_parents(fk, {r[idx] for r in rows if r[idx] is not None})
        if fk.get("self"):  # parents in this very batch arrive with it
            own = self.columns.index(fk["ref_column"])
            missing -= {str(r[own]) for r in rows}
        if not missing:
            return rows, keys, raws
        return self._drop_orphans(fk, idx, missing, rows, keys, raws, quarantine, fixups)

    async def _missing_parents(self, fk: dict, values: set) -> set:
        if not values:
            return set()
        parent = self.spec.get(fk["ref_table"])
        ref_type = next((c.target_type for c in parent.columns if c.name == fk["ref_column"]), "text") \
            if parent else "text"
        schema = cat.qi(self.plan.schema)
        sql = (f"SELECT x FROM unnest($1::text[]) AS x WHERE NOT EXISTS (SELECT 1 FROM {schema}."
               f"{cat.qi(fk['ref_table'])} p WHERE p.{cat.qi(fk['ref_column'])} = x::{ref_type})")
        return {r[0] for r in await self.conn.fetch(sql, [str(v) for v in values])}

    def _drop_orphans(self, fk, idx, missing, rows, keys, raws, quarantine, fixups):
        set_null = fk["on_delete"] == "SET NULL" and self.plan.policies.get("orphan_set_null") == "set_null"
        kept_rows, kept_keys, kept_raws = [], [], []
        for row, key, raw in zip(rows, keys, raws):
            value = row[idx]
            if value is None or str(value) not in missing:
                kept_rows.append(row), kept_keys.append(key), kept_raws.append(raw)
            elif set_null:
                kept_rows.append(row[:idx] + (None,) + row[idx + 1:]), kept_keys.append(key), kept_raws.append(raw)
                fixups.append((key, fk["column"], "orphan_set_null", "set_null", ledger.dumps(value)))
            elif self.settings.orphans == "fail":
                raise PreflightError(f"{self.table.name} row {key} points at a missing {fk['ref_table']}",
                                     detail=f"{fk['column']} = {value!r}",
                                     hint="use --orphans=quarantine to keep such rows aside, or delete them in HridaAI")
            else:
                quarantine.append((key, f"orphan: {fk['column']} -> {fk['ref_table']}.{fk['ref_column']} "
                                        f"{value!r} does not exist", "orphan", fk["column"],
                                   self._row_json(raw)))
        return kept_rows, kept_keys, kept_raws

    def _row_json(self, raw: tuple) -> str:
        return (self.strict or TableConverter(self.table, self.plan.policies)).row_json(raw)

    async def _copy(self, rows, keys, raws, quarantine, fixups) -> None:
        """COPY in a savepoint; if the server refuses, bisect down to the rows it refuses."""
        try:
            async with self.conn.transaction():
                await pgt.copy_rows(self.conn, schema=self.plan.schema, table=self.table.name,
                                    columns=self.columns, rows=rows)
            return
        except REJECTED_BY_SERVER as exc:
            if len(rows) == 1:
                await self._single(rows[0], keys[0], raws[0], exc, quarantine, fixups)
                return
        mid = len(rows) // 2
        await self._copy(rows[:mid], keys[:mid], raws[:mid], quarantine, fixups)
        await self._copy(rows[mid:], keys[mid:], raws[mid:], quarantine, fixups)

    async def _single(self, row, key, raw, exc, quarantine, fixups) -> None:
        """A row the server refused: classify it strictly (e.g. invalid JSON) or quarantine it with the error."""
        strict: Converted = self.strict.convert([raw])
        if strict.rows and strict.rows[0] != row:
            try:
                async with self.conn.transaction():
                    await pgt.copy_rows(self.conn, schema=self.plan.schema, table=self.table.name,
                                        columns=self.columns, rows=strict.rows)
                fixups[:] = [f for f in fixups if f[0] != key] + strict.fixups
                return
            except REJECTED_BY_SERVER as again:
                exc = again
        if strict.quarantine:
            quarantine += strict.quarantine
            return
        quarantine.append((key, f"rejected by PostgreSQL: {exc.__class__.__name__}: {exc}"[:500],
                           "server_reject", None, self._row_json(raw)))


def _whole_table_quarantine(table: TablePlan, raws: list[tuple]) -> Converted:
    conv = TableConverter.__new__(TableConverter)
    conv.source_columns = [c.name for c in table.columns if c.source_type is not None]
    conv._key_idx = []
    out = Converted()
    for raw in raws:
        out.quarantine.append((ledger.dumps([raw[0]]), "table is not in HridaAI's schema at this revision",
                               "table_not_in_target", None, conv.row_json(raw)))
    return out
