"""Stage 2 — plan: what will be done, decided from the snapshot and the target before anything is written.

`build.build(settings, snapshot)` compares the snapshot with the catalog's schema for its Alembic revision (or with
the target's schema in existing mode), chooses a conversion per column, and runs the preflight checks
(`checks`); the vector lane's part comes from `migrator.vectors.plan`. `model` is the plan's data (Plan,
TablePlan, ColumnPlan, VectorPlan, Check): the contract every later stage reads, importable by all.

May import: settings, errors, snapshot, catalog, schema_capture/schema_compare, ledger (read-only), convert,
sources, targets, vectors.plan. Never load, verify, or the rest of vectors.
"""
