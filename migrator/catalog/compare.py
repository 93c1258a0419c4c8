"""Compare a live target schema with the catalog using Alembic's own comparison machinery."""

from __future__ import annotations

import re
import warnings

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import create_async_engine

from migrator.catalog.schema import Catalog, Table

_SIMPLE_COLS = re.compile(r"^USING btree \((\w+(?:, \w+)*)\)$")


def _sa_type(pg_type: str) -> sa.types.TypeEngine:
    t = pg_type.lower()
    m = re.match(r"character varying(?:\((\d+)\))?$", t)
    if m:
        return sa.String(int(m.group(1))) if m.group(1) else sa.String()
    return {"text": sa.Text(), "bigint": sa.BigInteger(), "integer": sa.Integer(), "smallint": sa.SmallInteger(),
            "boolean": sa.Boolean(), "json": pg.JSON(), "jsonb": pg.JSONB(), "date": sa.Date(),
            "timestamp without time zone": sa.DateTime(), "timestamp with time zone": sa.DateTime(timezone=True),
            "double precision": sa.Float(), "bytea": sa.LargeBinary()}.get(t, sa.Text())


def to_metadata(catalog: Catalog, schema: str | None = None) -> sa.MetaData:
    """SQLAlchemy metadata equivalent to the catalog (tables, columns, PK/UNIQUE/FK, plain-column indexes)."""
    md = sa.MetaData(schema=schema)
    for t in catalog.tables.values():
        _table(md, t)
    return md


def _table(md: sa.MetaData, t: Table) -> sa.Table:
    cols = [sa.Column(c.name, _sa_type(c.type), nullable=c.nullable,
                      server_default=sa.text(c.default) if c.default else None) for c in t.columns]
    args: list = []
    for c in t.constraints:
        if c["kind"] == "p":
            args.append(sa.PrimaryKeyConstraint(*c["columns"], name=c["name"]))
        elif c["kind"] == "u":
            args.append(sa.UniqueConstraint(*c["columns"], name=c["name"]))
    for fk in t.foreign_keys:
        ref = f"{md.schema}.{fk.ref_table}" if md.schema else fk.ref_table
        args.append(sa.ForeignKeyConstraint(list(fk.columns), [f"{ref}.{c}" for c in fk.ref_columns],
                                            name=fk.name, ondelete=fk.on_delete if fk.on_delete != "NO ACTION" else None))
    table = sa.Table(t.name, md, *cols, *args)
    for ix in t.indexes:
        m = _SIMPLE_COLS.match(ix["using"])
        if m:
            sa.Index(ix["name"], *[table.c[c.strip()] for c in m.group(1).split(",")], unique=ix["unique"])
    return table


def _include(obj, name, type_, reflected, compare_to) -> bool:
    # expression/partial/DESC indexes are outside what Alembic reflects faithfully; the ledger schema is ours
    if type_ == "index" and reflected and compare_to is None:
        return False
    if type_ == "table" and name in ("document_chunk",):
        return False
    return True


async def differences(url: str, catalog: Catalog, *, schema: str = "public") -> list[str]:
    """Alembic's diff between the live schema and the catalog, as readable lines ([] = equal)."""
    engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1), poolclass=sa.NullPool)
    md = to_metadata(catalog, None if schema == "public" else schema)
    try:
        async with engine.connect() as conn:
            warnings.filterwarnings("ignore", message="Did not recognize type", category=sa.exc.SAWarning)
            diffs = await conn.run_sync(lambda c: compare_metadata(
                MigrationContext.configure(c, opts={"include_object": _include, "compare_type": True,
                                                    "include_schemas": False}), md))
    finally:
        await engine.dispose()
    return [_line(d) for d in diffs]


def _line(diff) -> str:
    if isinstance(diff, list):
        return "; ".join(_line(d) for d in diff)
    op = diff[0]
    rest = [getattr(x, "name", None) or str(x) for x in diff[1:] if x is not None]
    return f"{op}: {' '.join(str(r) for r in rest)[:300]}"
