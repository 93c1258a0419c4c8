"""`migrate files`: HridaAI's uploads moved to object storage, the `file` rows' paths rewritten to the URIs HridaAI's
own storage provider writes and reads (issue 19).

`config.py` reads HridaAI's storage settings (STORAGE_PROVIDER, S3_*), `s3.py` talks to an S3-compatible store,
`sources.py` finds each row's file under the source's `uploads/`, `run.py` uploads and rewrites (ledgered, resumable),
`verify.py` reads every object back and compares its size and SHA-256 with the source file's bytes.

May import: migrator.ledger, migrator.sources, migrator.targets, migrator.catalog, migrator.context,
migrator.progress, migrator.failpoints, migrator.errors. Never load, catchup, verify or vectors: moving uploads
is its own stage, after the rows are in (and proven by its own read-back, `migrate files --verify`).
"""
