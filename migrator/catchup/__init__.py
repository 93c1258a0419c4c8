"""The catch-up lane (issue 15, phase 2): bring a target loaded from one snapshot to a newer snapshot of the same
install, writing only what changed. `pages.py` tells which rows can have changed from the pages that differ
between the two snapshot files; `delta.py` finds what changed in each table between the two snapshots, locally;
`vector_delta.py` the same for the Chroma store; `run.py` is `migrate catch-up`, `vectors.py` its vector part.

May import: migrator.plan.model, migrator.convert, migrator.sources, migrator.catalog, migrator.targets,
migrator.ledger, migrator.context, migrator.progress, migrator.snapshot, migrator.errors, migrator.load.write and
migrator.vectors.load (the load's own rules for rows and chunks: orphans, quarantine, fixups, collisions). Never
verify: a catch-up is proven by `migrate verify` against the new snapshot. `steps.py`: each step committed once.
"""
