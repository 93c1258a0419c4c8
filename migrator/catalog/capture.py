"""Record a catalog entry from a live PostgreSQL database that HridaAI's own migrations created."""

from __future__ import annotations

import asyncpg

from migrator import pgread
from migrator.catalog.schema import _INDEXDEF, OWN_SCHEMA, VECTOR_TABLE, Catalog, Column, ForeignKey, Table, qi
from migrator.errors import PreflightError

_COLUMNS = """
SELECT c.relname AS table, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
       NOT a.attnotnull AS nullable, pg_get_expr(d.adbin, d.adrelid) AS default
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY c.relname, a.attnum"""

_CONSTRAINTS = """
SELECT c.relname AS table, con.conname AS name, con.contype::text AS kind, pg_get_constraintdef(con.oid) AS definition,
       rc.relname AS ref_table, con.confdeltype::text AS on_delete,
       ARRAY(SELECT attname FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute ON attrelid = con.conrelid AND attnum = k.n ORDER BY k.i) AS columns,
       ARRAY(SELECT attname FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute ON attrelid = con.confrelid AND attnum = k.n ORDER BY k.i) AS ref_columns
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class rc ON rc.oid = con.confrelid
WHERE n.nspname = $1 AND con.contype::text IN ('p', 'u', 'c', 'f') ORDER BY c.relname, con.conname"""

_INDEXES = """
SELECT c.relname AS table, i.relname AS name, pg_get_indexdef(i.oid) AS definition, ix.indisunique AS unique
FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid JOIN pg_class c ON c.oid = ix.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conindid = ix.indexrelid)
ORDER BY c.relname, i.relname"""

_SEQUENCES = """
SELECT s.relname AS name, format_type(q.seqtypid, NULL) AS type, q.seqstart AS start, q.seqincrement AS increment,
       q.seqmin AS min, q.seqmax AS max, q.seqcache AS cache, q.seqcycle AS cycle,
       t.relname AS table, a.attname AS column
FROM pg_sequence q JOIN pg_class s ON s.oid = q.seqrelid JOIN pg_namespace n ON n.oid = s.relnamespace
LEFT JOIN pg_depend d ON d.objid = s.oid AND d.deptype = 'a' AND d.refobjsubid > 0
LEFT JOIN pg_class t ON t.oid = d.refobjid
LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
WHERE n.nspname = $1 ORDER BY s.relname"""

_ON_DELETE = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
_SKIP_TABLES = {VECTOR_TABLE}


async def capture(conn: asyncpg.Connection, *, schema: str = "public") -> Catalog:
    """Read tables, constraints, indexes and sequences of `schema` (minus document_chunk) into a Catalog."""
    async with pgread.block(conn, readonly=True):
        await conn.execute(f"SET LOCAL search_path TO {qi(schema)}")
        cols = await conn.fetch(_COLUMNS, schema)
        cons = await conn.fetch(_CONSTRAINTS, schema)
        idxs = await conn.fetch(_INDEXES, schema)
        seqs = await conn.fetch(_SEQUENCES, schema)
        rev = await _revision(conn)
    tables: dict[str, dict] = {}
    for r in cols:
        if r["table"] not in _SKIP_TABLES:
            tables.setdefault(r["table"], _empty())["columns"].append(
                Column(r["name"], r["type"], r["nullable"], r["default"]))
    for r in cons:
        if r["table"] in tables:
            _add_constraint(tables[r["table"]], r)
    for r in idxs:
        if r["table"] in tables:
            m = _INDEXDEF.match(r["definition"])
            tables[r["table"]]["indexes"].append({"name": r["name"], "unique": r["unique"], "using": m.group(4)})
    built = {name: Table(name=name, columns=tuple(t["columns"]), primary_key=tuple(t["pk"]),
                         constraints=tuple(t["constraints"]), foreign_keys=tuple(t["fks"]),
                         indexes=tuple(t["indexes"])) for name, t in tables.items()}
    sequences = tuple({k: (int(v) if k in ("start", "increment", "min", "max", "cache") else v)
                       for k, v in dict(r).items()} for r in seqs)
    return Catalog(revision=rev, tables=built, sequences=sequences)


def _empty() -> dict:
    return {"columns": [], "pk": [], "constraints": [], "fks": [], "indexes": []}


def _add_constraint(t: dict, r) -> None:
    if r["kind"] == "f":
        t["fks"].append(ForeignKey(r["name"], tuple(r["columns"]), r["ref_table"], tuple(r["ref_columns"]),
                                   _ON_DELETE[r["on_delete"]], r["definition"]))
        return
    if r["kind"] == "p":
        t["pk"] = list(r["columns"])
    t["constraints"].append({"name": r["name"], "kind": r["kind"], "columns": list(r["columns"]),
                             "definition": r["definition"]})


async def _revision(conn: asyncpg.Connection) -> str:
    try:
        rows = await conn.fetch("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError as exc:
        raise PreflightError("this database has no alembic_version table: HridaAI did not create it",
                             hint="capture from a database that HridaAI's own migrations created") from exc
    if len(rows) != 1:
        raise PreflightError("alembic_version must hold exactly one row", detail=f"found {len(rows)}")
    return rows[0]["version_num"]


assert OWN_SCHEMA  # the tool's own schema is never captured: it is not in HridaAI's
