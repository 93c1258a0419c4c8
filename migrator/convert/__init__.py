"""Conversion: SQLite values to what PostgreSQL accepts, each change a named, counted policy (or a rejected row).

`policies` holds the policy table (POLICIES), Context (applies a policy: a Fixup or RowRejected) and the value
parsers; `values` the per-column converters; `fastpath` the proof-based batch path that skips per-value work when
a whole column is provably clean; `table` the TableConverter that turns a batch of raw rows into COPY rows, keys,
fixups and quarantined rows; `vectors` the same rules for Chroma chunks (their text and metadata;
the pgvector target encodes the vectors).

May import: errors, plan.model (data only). Never a stage (snapshot, plan, load, verify, vectors), the ledger or a
target: conversion is pure and runs in load workers and verify workers alike.
"""
