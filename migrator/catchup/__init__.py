"""The catch-up lane (issue 15, phase 2): bring a target loaded from one snapshot to a newer snapshot of the same
install, writing only what changed. `delta.py` finds what changed in each table between the two snapshots, locally.

May import: migrator.plan.model, migrator.convert, migrator.sources, migrator.catalog, migrator.errors. Never the load or verify
stages' internals.
"""
