"""Benchmark harness for hridaai-migrate: synthetic HridaAI data, COPY/executemany baselines, timed `migrate` runs.

Run ``python -m bench --help`` or ``python -m bench.vectors --help``; see bench/README.md. The files:

- ``__main__.py``         ``python -m bench``: the relational tables (chat, chat_message, message) against baselines
- ``vectors.py``          ``python -m bench.vectors``: the Chroma -> pgvector path, read from migrate's events
- ``files.py``            ``python -m bench.files``: issue 19's ``migrate files`` against boto3 upload_file in a thread pool
- ``s3server.py``         a moto S3 server as a child process (the files bench and tests/test_files.py)
- ``gcsserver.py``        gcp-storage-emulator (PyPI) as a child process (tests)
- ``azurite.py``          Azurite (Azure Storage emulator, from npm via scripts/setup) as a child process (tests)
- ``window.py``           ``python -m bench.window``: issue 15's catch-up window (bulk run, a change set, catch-up, verify)
- ``harness.py``          what both share: common options, log, server, timed migrate run/verify, results file
- ``migrate_runner.py``   a ``migrate`` child process: wall time, peak RSS, CPU, per-table load windows
- ``cpu.py``              machine-wide busy core-seconds, to split client CPU from the server's
- ``cpuset.py``           ``--split-cpus``: server and tool pinned to disjoint cores
- ``pgutil.py``           embedded server, per-run databases, baseline DDL
- ``generate.py``         the relational dataset (real 0.12.4 schema, deterministic rows), cached
- ``synth.py``            its row builders
- ``vector_data.py``      the vector dataset (a real Chroma store written by chromadb), cached
- ``baselines.py``        ceiling / naive / row-by-row loads of the relational tables
- ``vector_baselines.py`` chromadb read and COPY ceilings of ``document_chunk``
- ``report.py``           ``python -m bench``'s summary, table and JSON file (and the shared median/ratio)
- ``ingest.py``           the ingest ceiling: psql ``\\copy`` of every migrated table into index-free copies
- ``vector_report.py``    ``python -m bench.vectors``'s summary and table
- ``standin_migrate.py``  a tiny COPY stand-in for ``migrate``, to test the harness alone
- ``chaos.py``            ``python -m bench.chaos``: SIGKILL ``migrate run`` at every phase, resume, verify
- ``pgserver_ctl.py``     a pgserver PostgreSQL that can be stopped and restarted
- ``test_*.py``           the harness's own tests (``pytest bench``, no PostgreSQL needed)

Test infrastructure too: the test suite imports ``chaos.py`` (tests/test_chaos.py) and ``pgserver_ctl.py``
(tests/test_chaos.py, tests/test_bad_inputs.py), so changing them can break ``pytest tests``, not just the bench.
"""
