"""Stage 2 — plan: pure inspection of snapshot + target; writes nothing anywhere.

Decides the schema mode, maps every column to its target type and conversion, orders tables by foreign keys,
sizes batches and runs the preflight checks (each with a severity; any error stops `run`).
"""

from __future__ import annotations

import asyncpg

from migrator import ledger
from migrator.catalog import capture as schema_capture, schema as cat
from migrator.convert import policies as convert
from migrator.errors import MigrationError, TransientError
from migrator.plan import checks as chk, keys
from migrator.plan.model import Check, ColumnPlan, Plan, TablePlan
from migrator.settings import Settings, mask_dsn
from migrator.snapshot import Snapshot
from migrator.sources import sqlite as src
from migrator.targets import postgres as pgt
from migrator.vectors import plan as vectors_plan

_CONVERSIONS = {
    "json": "JSON text, validated (SQLite numbers -> JSON text)",
    "bool": "0/1 -> boolean",
    "int": "as-is",
    "date": "'YYYY-MM-DD' -> date",
    "timestamp": "SQLite date-time text -> timestamp",
    "bytes": "blob -> bytea",
    "float": "number",
}


async def build(settings: Settings, snapshot: Snapshot, *, scan: bool = True, vectors: bool = True) -> Plan:
    """Inspect snapshot and target and return the Plan (read-only on both sides).

    scan=True also runs every value through the converters to list what each policy will do (with keys).
    vectors=False leaves plan.vectors to the caller (`vectors_plan.build`; catch-up runs it beside its delta).

    Raises nothing for what it finds: every problem becomes a Check in the plan (errors make `run` refuse, exit 4);
    only an unreadable snapshot or work dir raises (PreflightError / WorkDirError).
    """
    schema = settings.database_schema or "public"
    plan = Plan(snapshot_id=snapshot.snapshot_id, source_revision=snapshot.source_revision,
                known_revisions=cat.known_revisions(), mode="create", target=mask_dsn(settings.target_url),
                target_state="unknown", schema=schema, policies=convert.resolve_actions(dict(settings.policies)),
                orphans=settings.orphans)
    conn = src.connect(snapshot.db_path, immutable=True)
    try:
        wrong_source = _not_hridaai(conn, plan.source_revision)
        plan.checks += [wrong_source] if wrong_source else []
        catalog = None if wrong_source else await _target_spec(settings, plan)
        if catalog is not None:
            plan.tables = _table_plans(conn, catalog, settings, measure_bytes=scan)
            plan.checks += chk.source_checks(conn, plan, catalog)
            plan.checks += [note for t in plan.tables if t.action == "load"
                            for note in [keys.check(t.name, t.key, t.key_index)] if note]
            if scan:
                plan.checks += chk.conversion_scan(conn, plan)
    finally:
        conn.close()
    if vectors:
        await vectors_plan.build(settings, snapshot, plan, scan=scan)
    return plan


def _not_hridaai(conn, revision: str | None) -> Check | None:
    """An error check when the source is empty, another application's database, or HridaAI's without a revision."""
    tables = src.tables(conn)
    where = "point --data-dir / DATA_DIR at the data directory of the HridaAI installation to migrate"
    if not tables:
        return Check("error", "source-empty", "the source database is empty: it holds no tables (HridaAI creates "
                     "them at its first start)", hint=where)
    if not _hridaai_core() - {"config", "alembic_version"} & set(tables):
        return Check("error", "source-not-hridaai", "the source is not a HridaAI database: it has none of HridaAI's "
                     "tables user, auth, chat", detail="its tables: " + ", ".join(tables[:10]), hint=where)
    if revision is None:
        return Check("error", "source-not-hridaai", "the source has HridaAI's tables but no alembic_version row: "
                     "HridaAI's migrations never stamped it", hint="start HridaAI (a current version) once on a "
                     "copy of the data so its migrations upgrade and stamp it, then snapshot that copy")
    return None


async def _target_spec(settings: Settings, plan: Plan) -> cat.Catalog | None:
    """Connect read-only, measure the target, choose the mode; the catalog or live schema to load into."""
    try:
        conn = await pgt.connect(settings.target_url, readonly=True)
    except MigrationError as exc:
        code = "target-unreachable" if isinstance(exc, TransientError) else "target-refused"
        plan.checks.append(Check("error", code, exc.message, exc.detail, exc.hint))
        return _known_catalog(plan)
    try:
        async with conn.transaction(readonly=True):
            known = set(_known_catalog(plan).tables) if plan.source_revision in plan.known_revisions else set()
            state = await pgt.inspect(conn, schema=plan.schema, known_tables=known | _hridaai_core())
            state.has_ledger = await ledger.exists(conn)
            plan.server = {"version": state.server_version_text, "lz4": state.lz4,
                           "vector_available": state.vector_available, "can_create": state.can_create}
            plan.target_state = state.describe()
            plan.checks += chk.target_checks(state, plan, settings)
            run = await _ledger_run(conn)
        if run is not None:
            plan.mode = f"resume ({run['mode']})"
            plan.checks.append(Check("info", "ledger-found",
                                     f"run {run['run_id']} ({run['state']}) of snapshot {run['snapshot_id']} "
                                     "is recorded in the target",
                                     hint="`migrate run --resume` continues it" if run["state"] != "done" else None))
        if state.kind == "empty" and run is None:
            plan.mode = "create"
            return _known_catalog(plan)
        if run is None or run["mode"] == "existing":
            plan.mode = "existing" if run is None else plan.mode
            return await _existing_spec(conn, plan, settings)
        return _known_catalog(plan)
    finally:
        await conn.close()


def _hridaai_core() -> set[str]:
    return {"user", "auth", "chat", "config", "alembic_version"}


async def _ledger_run(conn: asyncpg.Connection) -> dict | None:
    return await ledger.current_run(conn)


def _known_catalog(plan: Plan) -> cat.Catalog | None:
    try:
        return cat.for_revision(plan.source_revision)
    except MigrationError as exc:
        plan.checks.append(Check("error", "revision-unknown", exc.message, exc.detail, exc.hint))
        return None


async def _existing_spec(conn: asyncpg.Connection, plan: Plan, settings: Settings) -> cat.Catalog:
    """Existing mode: the live schema HridaAI made is the catalog; compared with the catalog through Alembic."""
    live = await schema_capture.capture(conn, schema=plan.schema)
    if plan.source_revision in plan.known_revisions and live.revision == plan.source_revision:
        # Alembic + SQLAlchemy: 0.5 s to import, only needed here
        from migrator.catalog import compare as schema_compare

        diffs = await schema_compare.differences(settings.target_url, cat.for_revision(live.revision), schema=plan.schema)
        if diffs:
            plan.checks.append(Check("error", "schema-differs",
                                     f"the target schema differs from HridaAI's at {live.revision} in "
                                     f"{len(diffs)} places (Alembic comparison)", "; ".join(diffs[:10]),
                                     "let HridaAI's own migrations create the target (or use an empty database)"))
    return live


def _table_plans(conn, catalog: cat.Catalog, settings: Settings, *, measure_bytes: bool = True) -> list[TablePlan]:
    plans: list[TablePlan] = []
    source_tables = set(src.tables(conn))
    for name in sorted(source_tables | set(catalog.tables)):
        plans.append(_table_plan(conn, name, catalog.tables.get(name), name in source_tables, settings,
                                 measure_bytes=measure_bytes))
    order = load_order(catalog)
    for t in plans:
        t.order = order.get(t.name, len(order))
    return plans


def _table_plan(conn, name: str, target: cat.Table | None, in_source: bool, settings: Settings, *,
                measure_bytes: bool = True) -> TablePlan:
    action = "stamp" if name == "alembic_version" else ("load" if target and in_source else
                                                        "quarantine" if in_source else "absent")
    plan = TablePlan(name=name, action=action)
    source_cols = {c.name: c for c in src.columns(conn, name)} if in_source else {}
    target_cols = {c.name: c for c in target.columns} if target else {}
    for col in list(target_cols) + [c for c in source_cols if c not in target_cols]:
        s, t = source_cols.get(col), target_cols.get(col)
        kind = convert.kind_of(t.type) if t else None
        how = ("not in target" if t is None else "not in source: NULL/default" if s is None
               else _CONVERSIONS.get(kind, "as-is"))
        if kind == "text" and t and "(" in t.type:
            how = f"length checked against {t.type}"
        if kind == "int" and s and s.declared.startswith(("DATETIME", "TIMESTAMP")):
            how = f"{s.declared}-declared epoch integers -> {t.type}"
        plan.columns.append(ColumnPlan(col, s.declared if s else None, t.type if t else None,
                                       t.nullable if t else True, how))
    if in_source:
        plan.rows = src.count(conn, name)
        # a full scan of every value: `migrate plan` reports it; run and verify bound batches by bytes as they read
        plan.bytes = src.byte_size(conn, name, list(source_cols)) if measure_bytes else 0
    if target:
        plan.key, plan.key_index = keys.key_of(conn, target, set(source_cols)) if in_source \
            else (list(target.primary_key), None)
        plan.fks = [{"column": fk.columns[0], "ref_table": fk.ref_table, "ref_column": fk.ref_columns[0],
                     "on_delete": fk.on_delete, "name": fk.name} for fk in target.foreign_keys
                    if fk.ref_table != name and len(fk.columns) == 1]
        plan.self_ref = next(({"column": fk.columns[0], "ref_column": fk.ref_columns[0], "on_delete": fk.on_delete}
                              for fk in target.foreign_keys if fk.ref_table == name), None)
    avg = plan.bytes / plan.rows if plan.rows else 0
    plan.batch_bytes = settings.batch_bytes
    plan.batch_rows = max(1, min(settings.batch_rows, int(settings.batch_bytes // avg) if avg else settings.batch_rows))
    return plan


def load_order(catalog: cat.Catalog) -> dict[str, int]:
    """Topological order of tables by foreign keys (parents first; self-references ignored), ties by name."""
    deps = {name: {fk.ref_table for fk in t.foreign_keys if fk.ref_table != name and fk.ref_table in catalog.tables}
            for name, t in catalog.tables.items()}
    order: dict[str, int] = {}
    while deps:
        ready = sorted(n for n, d in deps.items() if not d - set(order))
        if not ready:  # a cycle between tables: load the rest by name (FK checks will quarantine orphans)
            ready = sorted(deps)
        for n in ready:
            order[n] = len(order) + 1
            deps.pop(n)
    return order
