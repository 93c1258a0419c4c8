"""Preflight checks for plan: target state, source shape, orphans, unique conflicts, value scan."""

from __future__ import annotations

import re
import sqlite3
from collections import Counter

from migrator.catalog import schema as cat
from migrator.convert import policies as convert
from migrator.convert.keys import dumps
from migrator.convert.table import TableConverter, key_text
from migrator.plan.model import Check, Plan
from migrator.settings import Settings
from migrator.sources import sqlite as src
from migrator.targets.postgres import MIN_SERVER_VERSION, TargetState

SAMPLE = 10


def target_checks(state: TargetState, plan: Plan, settings: Settings) -> list[Check]:
    """Server version, privileges, emptiness or revision match."""
    out = []
    if state.server_version < MIN_SERVER_VERSION:
        out.append(Check("error", "server-too-old", f"PostgreSQL {state.server_version_text} is older than 13",
                         hint="use PostgreSQL 13 or newer (HridaAI and pgvector need it)"))
    if state.kind == "empty" and not state.can_create:
        out.append(Check("error", "no-create-privilege", "the target user may not create tables in the database",
                         hint=f"a DBA runs: GRANT CREATE ON DATABASE <db> TO <user>; "
                              f"GRANT CREATE ON SCHEMA {state.schema} TO <user>"))
    if state.kind != "empty" and state.revision != plan.source_revision and not state.has_ledger:
        out.append(Check("error", "revision-mismatch",
                         f"the target was made by HridaAI at revision {state.revision}, the source is at "
                         f"{plan.source_revision}",
                         hint="use an empty database, or one HridaAI of the source's version created"))
    if state.kind == "hridaai-with-data" and not state.has_ledger:
        data = ", ".join(f"{t}={n}" for t, n in state.rows.items() if n and t not in ("config", "alembic_version"))
        sev = "warning" if settings.force_clear else "error"
        out.append(Check(sev, "target-holds-data", "the target already holds HridaAI data besides its seed rows",
                         detail=data, hint="migrate into an empty database, or run `migrate run --force-clear` "
                                           "to delete everything HridaAI stored there first"))
    if state.lz4:
        out.append(Check("info", "lz4", "the server supports lz4 TOAST compression: the load uses it"))
    return out


def source_checks(conn: sqlite3.Connection, plan: Plan, catalog: cat.Catalog) -> list[Check]:
    """Shape, orphans, unique conflicts and CHECK constraints, with the keys of the rows concerned (read-only)."""
    conn.create_function("pg_lower", 1, lambda s: s.lower() if isinstance(s, str) else s, deterministic=True)
    conn.text_factory = src.lenient_text  # keys and values may hold invalid UTF-8: show them, never fail on them
    out: list[Check] = []
    try:
        orphans = OrphanScan(conn, plan.orphans, set_null=plan.policies.get("orphan_set_null") == "set_null")
        for t in sorted(plan.tables, key=lambda t: (t.order, t.name)):
            if t.action == "quarantine" and t.rows:
                out.append(Check("warning", "table-not-in-target",
                                 f"{t.name}: {t.rows} rows in a table HridaAI's schema at {catalog.revision} does not "
                                 "have", hint="they are kept in hridaai_migrate.quarantine, not loaded"))
            if t.action != "load":
                continue
            out += _shape_checks(conn, t)
            out += orphans.table(t)
            out += _unique_checks(conn, t, catalog.tables[t.name])
            out += _check_constraints(conn, t, catalog.tables[t.name])
    finally:
        conn.text_factory = str
    return out


def _shape_checks(conn, t) -> list[Check]:
    out = []
    for c in t.columns:
        if c.target_type is None:
            n = conn.execute(f"SELECT count(*) FROM {cat.qi(t.name)} WHERE {cat.qi(c.name)} IS NOT NULL").fetchone()[0]
            if n:
                out.append(Check("warning", "column-not-in-target",
                                 f"{t.name}.{c.name}: {n} non-NULL values in a column the target does not have"))
        elif c.source_type is None and not c.nullable:
            out.append(Check("error", "not-null-missing", f"{t.name}.{c.name} is NOT NULL in the target and "
                                                          "absent from the source"))
        elif convert.kind_of(c.target_type) == "unsupported":
            out.append(Check("error", "unsupported-type", f"{t.name}.{c.name}: target type {c.target_type}"))
    return out


class OrphanScan:
    """Rows whose parent is missing, transitively: the children of a row that will be quarantined are orphans too.

    Tables must be visited parents first (plan order); quarantined rowids are kept in a TEMP table (the snapshot
    itself stays read-only).
    """

    def __init__(self, conn: sqlite3.Connection, mode: str, *, set_null: bool = True):
        self.conn = conn
        self.mode = mode
        self.set_null = set_null  # the orphan_set_null policy: ON DELETE SET NULL references are kept, as NULL
        self.present = set(src.tables(conn))
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS hm_orphan (tbl TEXT NOT NULL, rid INTEGER NOT NULL, "
                     "PRIMARY KEY (tbl, rid))")
        conn.execute("DELETE FROM temp.hm_orphan")

    def table(self, t) -> list[Check]:
        """Checks for every foreign key of table t (then its self-reference, to a fixpoint)."""
        out = []
        for fk in t.fks:
            out += self._fk(t, fk, fk["ref_table"])
        if t.self_ref:
            out += self._fk(t, {**t.self_ref, "ref_table": t.name}, t.name)
        return out

    def _fk(self, t, fk: dict, parent: str) -> list[Check]:
        if fk["column"] not in {c.name for c in t.columns if c.source_type}:
            return []
        set_null = fk["on_delete"] == "SET NULL" and self.set_null
        rowids: list[int] = []
        while True:  # one pass for other tables; a self-reference repeats until no new orphan appears
            found = self._orphans(t.name, fk, parent)  # rows found before are in hm_orphan: never found again
            rowids += found
            if not set_null:
                self.conn.executemany("INSERT OR IGNORE INTO temp.hm_orphan VALUES (?, ?)",
                                      [(t.name, r) for r in found])
            if not found or parent != t.name or set_null:
                break
        return [self._check(t, fk, rowids, set_null)] if rowids else []

    def _orphans(self, table: str, fk: dict, parent: str) -> list[int]:
        col, ref = cat.qi(fk["column"]), cat.qi(fk["ref_column"])
        alive = ("NOT EXISTS (SELECT 1 FROM temp.hm_orphan q WHERE q.tbl = ? AND q.rid = {}.rowid)")
        if parent not in self.present:
            parent_ok, args = "0", [table]
        else:
            parent_ok = (f"EXISTS (SELECT 1 FROM {cat.qi(parent)} p WHERE p.{ref} = c.{col} AND "
                         f"{alive.format('p')})")
            args = [parent, table]
        sql = (f"SELECT c.rowid FROM {cat.qi(table)} c WHERE c.{col} IS NOT NULL AND NOT {parent_ok} "
               f"AND {alive.format('c')} ORDER BY c.rowid")
        return [r[0] for r in self.conn.execute(sql, args)]

    def _check(self, t, fk: dict, rowids: list[int], set_null: bool) -> Check:
        what = "set to NULL (orphan_set_null)" if set_null else (
            "quarantined" if self.mode == "quarantine" else "refused (--orphans=fail)")
        return Check("error" if self.mode == "fail" and not set_null else "warning", "orphans",
                     f"{t.name}.{fk['column']} -> {fk['ref_table']}.{fk['ref_column']}: {len(rowids)} rows "
                     f"point at a missing parent; they will be {what}",
                     detail="keys: " + _listed(_keys(self.conn, t, rowids[:SAMPLE]), len(rowids)),
                     hint="rows of deleted parents (or children of such rows); HridaAI on PostgreSQL would have "
                          + ("set the reference to NULL" if set_null else "deleted them (ON DELETE CASCADE)"))


_CAST = re.compile(r"::(?:character varying|timestamp without time zone|double precision|[a-z_]+)(?:\(\d+\))?"
                   r"(?:\[\])?")
_LOWER = re.compile(r"lower\(\(?(\w+)\)?(?:::text)?\)")


def _unique_groups(target: cat.Table) -> list[tuple[str, list[str], str | None]]:
    """(name, SQLite expressions, partial WHERE) of every PK, UNIQUE constraint and unique index."""
    groups = [(c["name"], [cat.qi(x) for x in c["columns"]], None) for c in target.constraints
              if c["kind"] in ("p", "u")]
    for ix in target.indexes:
        if not ix["unique"]:
            continue
        m = _LOWER.search(ix["using"])
        where = ix["using"].split(" WHERE ", 1)[1] if " WHERE " in ix["using"] else None
        if m:
            groups.append((ix["name"], [f"pg_lower({cat.qi(m.group(1))})"], _sqlite_expr(where) if where else None))
        elif re.fullmatch(r"USING btree \((\w+(?:, \w+)*)\)", ix["using"]):
            cols = re.fullmatch(r"USING btree \((.*)\)", ix["using"]).group(1).split(", ")
            groups.append((ix["name"], [cat.qi(c) for c in cols], None))
    return groups


def _unique_checks(conn, t, target: cat.Table) -> list[Check]:
    out = []
    source_cols = {c.name for c in t.columns if c.source_type}
    enforced = _unique_in_sqlite(conn, t.name)
    for name, exprs, where in _unique_groups(target):
        if not all(re.sub(r"^pg_lower\((.*)\)$", r"\1", e).strip('"') in source_cols for e in exprs):
            continue
        if where is None and frozenset(exprs) in enforced:
            continue  # SQLite enforces the same uniqueness (no GROUP BY over a million rows to find nothing)
        cond = " AND ".join(f"{e} IS NOT NULL" for e in exprs) + (f" AND ({where})" if where else "")
        sql = (f"SELECT {', '.join(exprs)}, count(*), group_concat(rowid) FROM {cat.qi(t.name)} WHERE {cond} "
               f"GROUP BY {', '.join(exprs)} HAVING count(*) > 1")
        dups = conn.execute(sql).fetchall()
        if not dups:
            continue
        shown = [f"{dumps(list(d[:-2]))} in rows {_listed(_keys(conn, t, _rowids(d[-1])[:SAMPLE]), d[-2])}"
                 for d in dups[:SAMPLE]]
        more = f" (and {len(dups) - SAMPLE} more groups)" if len(dups) > SAMPLE else ""
        out.append(Check("error", "unique-conflict",
                         f"{t.name}: {len(dups)} groups of rows SQLite accepted but {name} forbids on PostgreSQL",
                         detail="; ".join(shown) + more,
                         hint="resolve them in HridaAI before migrating (e.g. merge or rename the duplicate "
                              "users, tags, prompt commands, skills or share links), then snapshot again"))
    return out


def _unique_in_sqlite(conn, table: str) -> set[frozenset[str]]:
    """Column sets (quoted as _unique_groups quotes them) that a full, BINARY-collated unique index of the source
    table enforces: equal values there are equal bytes, as PostgreSQL's text equality compares them."""
    out = set()
    for _, index, unique, _, partial in conn.execute(f"PRAGMA index_list({cat.qi(table)})").fetchall():
        if not unique or partial:
            continue
        cols = [r for r in conn.execute(f"PRAGMA index_xinfo({cat.qi(index)})").fetchall() if r[5]]  # key columns
        if cols and all(r[2] is not None and str(r[4]).upper() == "BINARY" for r in cols):
            out.add(frozenset(cat.qi(r[2]) for r in cols))
    return out


def _check_constraints(conn, t, target: cat.Table) -> list[Check]:
    """CHECK constraints of the target evaluated on the source: violating rows will be refused by PostgreSQL."""
    out = []
    source_cols = {c.name for c in t.columns if c.source_type}
    for c in target.constraints:
        if c["kind"] != "c" or not set(c.get("columns") or ()) <= source_cols:
            continue
        expr = _sqlite_expr(c["definition"].removeprefix("CHECK "))
        try:
            rowids = [r[0] for r in conn.execute(f"SELECT rowid FROM {cat.qi(t.name)} WHERE NOT ({expr})")]
        except sqlite3.Error:
            continue  # not expressible in SQLite: the load still quarantines what the server refuses
        if rowids:
            out.append(Check("warning", "check-violation",
                             f"{t.name}: {len(rowids)} rows violate {c['name']} {c['definition']}; PostgreSQL "
                             "refuses them, they will be quarantined (server_reject)",
                             detail="keys: " + _listed(_keys(conn, t, rowids[:SAMPLE]), len(rowids))))
    return out


def _rowids(concatenated: str) -> list[int]:
    return [int(r) for r in concatenated.split(",")]


def _sqlite_expr(pg_expr: str) -> str:
    """A simple PostgreSQL boolean expression as SQLite understands it (casts dropped)."""
    return _CAST.sub("", pg_expr)


def _keys(conn, t, rowids: list[int]) -> list[str]:
    """The report keys (as the load writes them) of some rows."""
    cols = [k for k in t.key if any(c.name == k and c.source_type for c in t.columns)]
    select = ", ".join(cat.qi(k) for k in cols) or "rowid"
    marks = ",".join("?" * len(rowids))
    found = {r[0]: r[1:] for r in conn.execute(
        f"SELECT rowid, {select} FROM {cat.qi(t.name)} WHERE rowid IN ({marks})", rowids)}
    return [key_text(list(found[r])) for r in rowids if r in found]


def _listed(keys: list[str], total: int) -> str:
    return ", ".join(keys) + (f" (and {total - len(keys)} more)" if total > len(keys) else "")


def conversion_scan(conn: sqlite3.Connection, plan: Plan) -> list[Check]:
    """Run every value through the converters (no target): what each policy will do, with sample keys."""
    out = []
    for t in plan.tables:
        if t.action != "load" or not t.rows:
            continue
        conv = TableConverter(t, plan.policies, strict_json=True)  # also lists text that is not JSON
        orphaned = _orphaned(conn, t.name)  # quarantined as orphans: their values are not converted
        hits: Counter = Counter()
        samples: dict[tuple, list[str]] = {}
        after = src.FIRST
        while True:
            raws, after = src.read_batch(conn, t.name, conv.source_columns, after=after, max_rows=t.batch_rows,
                                         max_bytes=t.batch_bytes)
            if not raws:
                break
            res = conv.convert([r for r in raws if r[0] not in orphaned] if orphaned else raws)
            for key, column, policy, action, _ in res.fixups:
                _tally(hits, samples, (column, policy, action), key)
            for key, _reason, policy, column, _ in res.quarantine:
                _tally(hits, samples, (column, policy, "reject"), key)
        for (column, policy, action), n in sorted(hits.items()):
            sev = "warning"
            out.append(Check(sev, f"policy:{policy}", f"{t.name}.{column}: {n} values -> {action} "
                             f"({convert.POLICIES.get(policy, ('', '', policy))[2]})",
                             detail="keys: " + _listed(samples[(column, policy, action)], n)))
    return out


def _orphaned(conn: sqlite3.Connection, table: str) -> set[int]:
    """Rowids source_checks found to be orphans that will be quarantined (none when it did not run)."""
    try:
        return {r[0] for r in conn.execute("SELECT rid FROM temp.hm_orphan WHERE tbl = ?", (table,))}
    except sqlite3.OperationalError:
        return set()


def _tally(hits: Counter, samples: dict, k: tuple, key: str) -> None:
    hits[k] += 1
    if len(samples.setdefault(k, [])) < SAMPLE:
        samples[k].append(key)
