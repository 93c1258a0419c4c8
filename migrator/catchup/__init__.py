"""The catch-up lane (issue 15, phase 2): bring a target loaded from one snapshot to a newer snapshot of the same
install, writing only what changed. `delta.py` finds what changed in each table between the two snapshots, locally;
`vector_delta.py` the same for the Chroma store; `run.py` is `migrate catch-up` (tables; a changed vector store is
refused until its apply lands).

May import: migrator.plan.model, migrator.convert, migrator.sources, migrator.catalog, migrator.targets,
migrator.ledger, migrator.context, migrator.snapshot, migrator.errors, and migrator.load.write (the load's own row
rules: orphans, quarantine, fixups). Never verify: a catch-up is proven by `migrate verify` against the new snapshot.
"""
