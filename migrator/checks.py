"""Preflight checks for plan: target state, source shape, orphans, unique conflicts, value scan."""

from __future__ import annotations

import re
import sqlite3
from collections import Counter

from migrator import catalog as cat
from migrator import convert
from migrator.plan_model import Check, Plan
from migrator.rows import TableConverter
from migrator.settings import Settings
from migrator.sources import sqlite as src
from migrator.targets.postgres import MIN_SERVER_VERSION, TargetState

SAMPLE = 5


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
                         detail=data, hint="migrate into an empty database, or pass --force-clear to delete it"))
    if state.lz4:
        out.append(Check("info", "lz4", "the server supports lz4 TOAST compression: the load uses it"))
    return out


def source_checks(conn: sqlite3.Connection, plan: Plan, spec: cat.Catalog) -> list[Check]:
    """Shape, orphans, unique conflicts and a conversion scan of every value (read-only)."""
    conn.create_function("pg_lower", 1, lambda s: s.lower() if isinstance(s, str) else s, deterministic=True)
    out: list[Check] = []
    for t in plan.tables:
        if t.action == "quarantine" and t.rows:
            out.append(Check("warning", "table-not-in-target",
                             f"{t.name}: {t.rows} rows in a table HridaAI's schema at {spec.revision} does not have",
                             hint="they are kept in hridaai_migrate.quarantine, not loaded"))
        if t.action != "load":
            continue
        out += _shape_checks(conn, t)
        out += _orphan_checks(conn, t, plan.orphans)
        out += _unique_checks(conn, t, spec.tables[t.name])
    return out


def _shape_checks(conn, t) -> list[Check]:
    out = []
    for c in t.columns:
        if c.target_type is None:
            n = conn.execute(f"SELECT count(*) FROM {src.qi(t.name)} WHERE {src.qi(c.name)} IS NOT NULL").fetchone()[0]
            if n:
                out.append(Check("warning", "column-not-in-target",
                                 f"{t.name}.{c.name}: {n} non-NULL values in a column the target does not have"))
        elif c.source_type is None and not c.nullable:
            out.append(Check("error", "not-null-missing", f"{t.name}.{c.name} is NOT NULL in the target and "
                                                          "absent from the source"))
        elif convert.kind_of(c.target_type) == "unsupported":
            out.append(Check("error", "unsupported-type", f"{t.name}.{c.name}: target type {c.target_type}"))
    return out


def _orphan_checks(conn, t, mode: str) -> list[Check]:
    out = []
    fks = list(t.fks) + ([{**t.self_ref, "ref_table": t.name}] if t.self_ref else [])
    for fk in fks:
        if fk["ref_table"] not in src.tables(conn):
            continue
        col, ref = src.qi(fk["column"]), src.qi(fk["ref_column"])
        sql = (f"SELECT c.rowid FROM {src.qi(t.name)} c WHERE c.{col} IS NOT NULL AND NOT EXISTS "
               f"(SELECT 1 FROM {src.qi(fk['ref_table'])} p WHERE p.{ref} = c.{col})")
        rowids = [r[0] for r in conn.execute(sql)]
        if not rowids:
            continue
        set_null = fk["on_delete"] == "SET NULL"
        keys = _keys(conn, t, rowids[:SAMPLE])
        what = "set to NULL (orphan_set_null)" if set_null else (
            "quarantined" if mode == "quarantine" else "refused (--orphans=fail)")
        out.append(Check("error" if mode == "fail" and not set_null else "warning", "orphans",
                         f"{t.name}.{fk['column']} -> {fk['ref_table']}.{fk['ref_column']}: {len(rowids)} rows "
                         f"point at a missing parent; they will be {what}", detail=f"keys: {', '.join(keys)}",
                         hint="rows of deleted parents; HridaAI on PostgreSQL would have deleted them (CASCADE)"))
    return out


def _keys(conn, t, rowids: list[int]) -> list[str]:
    cols = ", ".join(src.qi(k) for k in t.key) or "rowid"
    marks = ",".join("?" * len(rowids))
    return [str(list(r)) for r in conn.execute(f"SELECT {cols} FROM {src.qi(t.name)} WHERE rowid IN ({marks})",
                                               rowids)]


_LOWER = re.compile(r"lower\(\(?(\w+)\)?(?:::text)?\)")


def _unique_checks(conn, t, target: cat.Table) -> list[Check]:
    out = []
    groups = [(c["name"], [src.qi(x) for x in c["columns"]], None) for c in target.constraints
              if c["kind"] in ("p", "u")]
    for ix in target.indexes:
        if ix["unique"]:
            m = _LOWER.search(ix["using"])
            where = ix["using"].split(" WHERE ", 1)[1] if " WHERE " in ix["using"] else None
            if m:
                groups.append((ix["name"], [f"pg_lower({src.qi(m.group(1))})"],
                               re.sub(r"::\w+", "", where) if where else None))
            elif re.fullmatch(r"USING btree \((\w+(?:, \w+)*)\)", ix["using"]):
                cols = re.fullmatch(r"USING btree \((.*)\)", ix["using"]).group(1).split(", ")
                groups.append((ix["name"], [src.qi(c) for c in cols], None))
    source_cols = {c.name for c in t.columns if c.source_type}
    for name, exprs, where in groups:
        if not all(re.sub(r"^pg_lower\((.*)\)$", r"\1", e).strip('"') in source_cols for e in exprs):
            continue
        cond = " AND ".join(f"{e} IS NOT NULL" for e in exprs) + (f" AND ({where})" if where else "")
        sql = (f"SELECT {', '.join(exprs)}, count(*) FROM {src.qi(t.name)} WHERE {cond} "
               f"GROUP BY {', '.join(exprs)} HAVING count(*) > 1 LIMIT {SAMPLE + 1}")
        dups = conn.execute(sql).fetchall()
        if dups:
            shown = "; ".join(f"{list(d[:-1])} x{d[-1]}" for d in dups[:SAMPLE])
            out.append(Check("error", "unique-conflict",
                             f"{t.name}: values SQLite accepted but {name} forbids on PostgreSQL", detail=shown,
                             hint="resolve them in HridaAI before migrating (e.g. merge or rename the duplicate "
                                  "users, tags, prompt commands, skills or share links), then snapshot again"))
    return out


def conversion_scan(conn: sqlite3.Connection, plan: Plan) -> list[Check]:
    """Run every value through the converters (no target): what each policy will do, with sample keys."""
    out = []
    for t in plan.tables:
        if t.action != "load" or not t.rows:
            continue
        conv = TableConverter(t, plan.policies)
        hits: Counter = Counter()
        samples: dict[tuple, list[str]] = {}
        after = -(2 ** 63)
        while True:
            raws, after = src.read_batch(conn, t.name, conv.source_columns, after=after, max_rows=t.batch_rows,
                                         max_bytes=t.batch_bytes)
            if not raws:
                break
            res = conv.convert(raws)
            for key, column, policy, action, _ in res.fixups:
                _tally(hits, samples, (column, policy, action), key)
            for key, _reason, policy, column, _ in res.quarantine:
                _tally(hits, samples, (column, policy, "reject"), key)
        for (column, policy, action), n in sorted(hits.items()):
            sev = "warning"
            out.append(Check(sev, f"policy:{policy}", f"{t.name}.{column}: {n} values -> {action} "
                             f"({convert.POLICIES.get(policy, ('', '', policy))[2]})",
                             detail="keys: " + ", ".join(samples[(column, policy, action)])))
    return out


def _tally(hits: Counter, samples: dict, k: tuple, key: str) -> None:
    hits[k] += 1
    if len(samples.setdefault(k, [])) < SAMPLE:
        samples[k].append(key)
