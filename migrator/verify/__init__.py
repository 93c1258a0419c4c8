"""Stage 4 — verify: measure that the target holds exactly the snapshot (minus what was quarantined, plus what
policies changed), table by table and key by key.

`run.check(ctx, ...)` compares counts and order-independent checksums per table (`checksum`), computed on both
sides by `table` (the source side reads the snapshot with `sources.sqlite`, converting like the load did) in worker
processes (`pool`); differences are localised to keys by bucket. Vectors are checked by `migrator.vectors.verify`.

May import: context, settings, errors, ledger, catalog, snapshot, parallel, plan.model, convert, sources, targets,
vectors.verify. Never load.
"""
