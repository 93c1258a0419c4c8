"""Stage 3 — load: every table in FK order, in batches that commit exactly once with their ledger row.

`run.execute(ctx, resume=...)` takes the migration lock, splits big tables into parts (`split`), creates the
schema and the run in one transaction (`begin`), loads parts over `--jobs` worker processes (`workers`, each
running `part.load_part` on its own connection: `read` reads and converts the next batch in a thread while `write`
copies the current one), hands the vectors to `migrator.vectors.load`, then finalizes (`finalize`: indexes,
sequences, alembic_version, ANALYZE — each a ledgered step).

May import: context, settings, errors, progress, ledger, catalog, snapshot, parallel, plan.model, convert, sources,
targets, vectors.load. Never verify, plan.build or plan.checks.
"""
