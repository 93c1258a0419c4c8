"""Row-level conversion of a table: raw SQLite rows -> target tuples, quarantined rows and fixups."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from migrator.convert import fastpath, policies as convert, values as convert_values
from migrator.convert.keys import dumps
from migrator.plan.model import TablePlan


@dataclass
class Converted:
    """One batch after conversion."""

    rows: list[tuple] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    raws: list[tuple] = field(default_factory=list)
    quarantine: list[tuple] = field(default_factory=list)  # (key, reason, policy, column, row_json)
    fixups: list[tuple] = field(default_factory=list)  # (key, column, policy, action, original_json)


class TableConverter:
    """Converters for every copied column of one table, built once."""

    def __init__(self, table: TablePlan, actions: dict[str, str], *, strict_json: bool = False):
        self.table = table
        self.actions = actions
        self.columns = [c.name for c in table.copy_columns]
        self.source_columns = [c.name for c in table.columns if c.source_type is not None]
        self._src_index = {c: i for i, c in enumerate(self.source_columns)}
        self._picks = [self._src_index[c] for c in self.columns]
        self._convs = [convert_values.converter_for(c.name, c.target_type, c.nullable) for c in table.copy_columns]
        self.convs, self.picks = self._convs, self._picks
        self.proofs = [fastpath.proof_for(c.target_type, c.nullable)
                       for c in table.copy_columns]
        self._json_cols = [i for i, c in enumerate(table.copy_columns) if convert.kind_of(c.target_type) == "json"]
        self._not_null = {i for i, c in enumerate(table.copy_columns) if not c.nullable}
        # invalid JSON found only when the server refuses it is fine when such rows are rejected anyway; when the
        # policy keeps them (wrap/null), every json value is validated up front so load and verify agree
        self.strict_json = strict_json or actions.get("invalid_json", "reject") != "reject"
        key_cols = table.key or []
        self._key_idx = [self._src_index[c] for c in key_cols if c in self._src_index]

    def key_of(self, raw: tuple) -> str:
        """The row's key for reports: JSON list of its primary-key values (rowid when it has none)."""
        if not self._key_idx:
            return dumps([raw[0]])
        return key_text([raw[1 + i] for i in self._key_idx])

    def convert(self, raws: list[tuple]) -> Converted:
        """Convert raw rows (rowid, *source values in source_columns order)."""
        out = Converted()
        if fastpath.convert_batch(self, raws, out):
            return out
        for raw in raws:
            ctx = convert.Context(self.actions)
            try:
                values = [conv(raw[1 + i], ctx) for conv, i in zip(self._convs, self._picks)]
                if self.strict_json:
                    self._validate_json(values, ctx)
            except convert.RowRejected as rej:
                out.quarantine.append((self.key_of(raw), rej.reason, rej.policy, rej.column, self.row_json(raw)))
                continue
            key = self.key_of(raw)
            out.rows.append(tuple(values))
            out.keys.append(key)
            out.raws.append(raw)
            for f in ctx.fixups:
                out.fixups.append((key, f.column, f.policy, f.action, dumps(f.original)))
        return out

    def _validate_json(self, values: list, ctx: convert.Context) -> None:
        for j in self._json_cols:
            before = values[j]
            values[j] = convert_values.validate_json(self.columns[j], before, ctx)
            if values[j] is None and before is not None and j in self._not_null:
                raise convert.RowRejected(self.columns[j], "invalid_json",
                                          f"not JSON, and {self.columns[j]} is NOT NULL (invalid_json)")

    def row_json(self, raw: tuple) -> str:
        """The full source row as ASCII JSON (for the quarantine table)."""
        return row_json(self.source_columns, raw)


def row_json(source_columns: list[str], raw: tuple) -> str:
    """A raw row (rowid, *values of source_columns) as ASCII JSON {column: value} (for the quarantine table)."""
    return dumps({c: _plain(raw[1 + i]) for i, c in enumerate(source_columns)})


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$blob_hex": value.hex()}
    if isinstance(value, str) and not value.isascii():
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace") \
            if any("\udc80" <= ch <= "\udcff" for ch in value) else value
    return value


def key_text(values: list) -> str:
    """A key as reports write it: ASCII JSON list of the source values (blobs as {"$blob_hex": ...})."""
    return dumps([_plain(v) for v in values])

