"""The schema catalog: what HridaAI's own Alembic migrations create on PostgreSQL, per revision.

`schema` reads a catalog entry (`schemas/<revision>.json`: tables, columns, constraints, indexes, sequences;
`for_revision`) and writes its DDL, plus `qi`, the one identifier quoting (PostgreSQL and SQLite alike);
`capture` records an entry from a database HridaAI created (`migrate schema capture`); `compare` tells a live
schema apart from an entry (existing mode), with Alembic's autogenerate.

May import: errors, pgread. Nothing of the stages: they all read it.
"""
