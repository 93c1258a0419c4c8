"""The schema catalog: HridaAI's PostgreSQL schema per alembic revision, in the project's own JSON form.

A catalog file is *captured* from a database that HridaAI's own migrations created (`migrate schema capture`),
so it records exactly what Alembic makes on PostgreSQL: column types, nullability, defaults, constraint and index
names, partial and expression indexes, sequences. From it we generate the DDL for *create* mode and the
SQLAlchemy metadata that Alembic's comparison uses in *existing* mode.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from migrator.errors import PreflightError

FORMAT_VERSION = 1
VECTOR_TABLE = "document_chunk"
OWN_SCHEMA = "hridaai_migrate"


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    default: str | None = None


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    on_delete: str
    definition: str


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    constraints: tuple[dict, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    indexes: tuple[dict, ...] = ()

    def column(self, name: str) -> Column | None:
        """The column called `name`, or None."""
        return next((c for c in self.columns if c.name == name), None)


@dataclass(frozen=True)
class Catalog:
    revision: str
    tables: dict[str, Table]
    sequences: tuple[dict, ...] = field(default_factory=tuple)

    def to_json(self) -> dict:
        """The persisted form (see schemas/README.md)."""
        return {
            "format_version": FORMAT_VERSION,
            "revision": self.revision,
            "tables": {name: _table_json(t) for name, t in sorted(self.tables.items())},
            "sequences": list(self.sequences),
        }


def _table_json(t: Table) -> dict:
    return {
        "columns": [c.__dict__ for c in t.columns],
        "primary_key": list(t.primary_key),
        "constraints": list(t.constraints),
        "foreign_keys": [{**fk.__dict__, "columns": list(fk.columns), "ref_columns": list(fk.ref_columns)}
                         for fk in t.foreign_keys],
        "indexes": list(t.indexes),
    }


def from_json(doc: dict) -> Catalog:
    """Parse a catalog document (refuses unknown format versions)."""
    if doc.get("format_version") != FORMAT_VERSION:
        raise PreflightError("schema catalog has an unknown format_version",
                             detail=str(doc.get("format_version")), hint="upgrade hridaai-migrate")
    tables = {}
    for name, t in doc["tables"].items():
        tables[name] = Table(
            name=name,
            columns=tuple(Column(**c) for c in t["columns"]),
            primary_key=tuple(t["primary_key"]),
            constraints=tuple(t["constraints"]),
            foreign_keys=tuple(ForeignKey(**{**fk, "columns": tuple(fk["columns"]),
                                             "ref_columns": tuple(fk["ref_columns"])}) for fk in t["foreign_keys"]),
            indexes=tuple(t["indexes"]),
        )
    return Catalog(revision=doc["revision"], tables=tables, sequences=tuple(doc.get("sequences", ())))


def known_revisions() -> list[str]:
    """Alembic revisions the bundled catalog knows."""
    return sorted(p.name[:-5] for p in resources.files("migrator.schemas").iterdir()
                  if p.name.endswith(".json"))


def for_revision(revision: str) -> Catalog:
    """The bundled catalog for `revision`; PreflightError naming the known ones otherwise."""
    path = resources.files("migrator.schemas") / f"{revision}.json"
    if not path.is_file():
        raise PreflightError(
            f"the schema catalog does not know alembic revision {revision}",
            detail=f"known revisions: {', '.join(known_revisions()) or 'none'}",
            hint="upgrade HridaAI on a copy of the SQLite data first (start a HridaAI release whose head is a known "
                 "revision against it), or let HridaAI of the source's version create the target schema and use the "
                 "existing mode (start HridaAI once with DATABASE_URL pointing at the empty target, stop it, migrate)",
        )
    return from_json(json.loads(path.read_text()))


def save(catalog: Catalog, directory: Path) -> Path:
    """Write `<revision>.json` into `directory` (used by `migrate schema capture`)."""
    path = directory / f"{catalog.revision}.json"
    path.write_text(json.dumps(catalog.to_json(), indent=1, ensure_ascii=False) + "\n")
    return path


def qi(name: str) -> str:
    """Quote an SQL identifier, for PostgreSQL and SQLite alike (names come from files we do not control)."""
    return '"' + name.replace('"', '""') + '"'


def create_statements(catalog: Catalog) -> list[str]:
    """DDL for tables, sequences, PK/UNIQUE/CHECK and FK constraints (indexes come later: index_statements)."""
    out = [_sequence_ddl(s) for s in catalog.sequences]
    for t in catalog.tables.values():
        cols = ",\n  ".join(_column_ddl(c) for c in t.columns)
        out.append(f"CREATE TABLE {qi(t.name)} (\n  {cols}\n)")
    out += [f"ALTER SEQUENCE {qi(s['name'])} OWNED BY {qi(s['table'])}.{qi(s['column'])}"
            for s in catalog.sequences if s.get("table")]
    for t in catalog.tables.values():
        out += [f"ALTER TABLE {qi(t.name)} ADD CONSTRAINT {qi(c['name'])} {c['definition']}" for c in t.constraints]
    for t in catalog.tables.values():
        out += [f"ALTER TABLE {qi(t.name)} ADD CONSTRAINT {qi(fk.name)} {fk.definition}" for fk in t.foreign_keys]
    return out


def index_statements(catalog: Catalog) -> list[str]:
    """CREATE INDEX IF NOT EXISTS for every non-constraint index (idempotent: safe to re-run on resume)."""
    return [f"CREATE {'UNIQUE ' if ix['unique'] else ''}INDEX IF NOT EXISTS {qi(ix['name'])} "
            f"ON {qi(t.name)} {ix['using']}"
            for t in catalog.tables.values() for ix in t.indexes]


def _column_ddl(c: Column) -> str:
    ddl = f"{qi(c.name)} {c.type}"
    if c.default is not None:
        ddl += f" DEFAULT {c.default}"
    return ddl + ("" if c.nullable else " NOT NULL")


def _sequence_ddl(s: dict) -> str:
    return (f"CREATE SEQUENCE {qi(s['name'])} AS {s['type']} START WITH {s['start']} INCREMENT BY {s['increment']} "
            f"MINVALUE {s['min']} MAXVALUE {s['max']} CACHE {s['cache']}{' CYCLE' if s['cycle'] else ''}")


_IDENT = r'(?:"(?:[^"]|"")*"|[^\s."]+)'  # an identifier as pg_get_indexdef prints it (quoted when it must be)
_INDEXDEF = re.compile(rf"^CREATE (UNIQUE )?INDEX ({_IDENT}) ON (?:ONLY )?({_IDENT}(?:\.{_IDENT})?) (USING .*)$")
