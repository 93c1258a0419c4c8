"""Existing mode, a target HridaAI < 0.11.4 started once: its pgvector client built `idx_document_chunk_vector`
(ivfflat) at startup on the empty `document_chunk`. Its lists are trained on nothing, so the load must not keep it
as it is: it is rebuilt after the load, with the same name and definition, and `plan` and the run summary say so.
Every other index the target had is left as it was."""

from __future__ import annotations

import json

from test_preflight import hridaai_made_target

from conftest import SMALL, query, run_cli

# what HridaAI 0.6.x's pgvector client runs at startup (vector(1536), ivfflat lists = 100), before any data
STARTUP_DDL = [
    "CREATE EXTENSION IF NOT EXISTS vector",
    "CREATE TABLE IF NOT EXISTS document_chunk (id TEXT PRIMARY KEY, vector vector(1536), "
    "collection_name TEXT NOT NULL, text TEXT, vmetadata JSONB)",
    "CREATE INDEX IF NOT EXISTS idx_document_chunk_vector ON document_chunk USING ivfflat "
    "(vector vector_cosine_ops) WITH (lists = 100)",
    "CREATE INDEX IF NOT EXISTS idx_document_chunk_collection_name ON document_chunk (collection_name)",
    "CREATE INDEX IF NOT EXISTS extra_operator_index ON document_chunk (id, collection_name)",  # not HridaAI's
]
INDEX = ("SELECT c.relfilenode, pg_get_indexdef(c.oid) FROM pg_class c "
         "WHERE c.relname = 'idx_document_chunk_vector'")


def _index(url: str) -> tuple[int, str]:
    row = query(url, INDEX)[0]
    return row[0], row[1]


def test_ivfflat_built_on_the_empty_table_is_rebuilt_after_the_load(target_url, tmp_path):
    hridaai_made_target(target_url, signed_up=False)
    for stmt in STARTUP_DDL:
        query(target_url, stmt)
    before = _index(target_url)
    extra = query(target_url, "SELECT relfilenode FROM pg_class WHERE relname = 'extra_operator_index'")[0][0]
    common = ["--data-dir", str(SMALL), "--work-dir", str(tmp_path / "w"), "--target", target_url,
              "--log-format", "none"]

    plan = run_cli("plan", *common, "--json")
    assert plan.returncode == 0, plan.stdout[-2000:] + plan.stderr
    checks = {c["code"]: c for c in json.loads(plan.stdout)["checks"]}
    assert "rebuilt after the load" in checks["vector-index-rebuild"]["message"]
    assert "ivfflat" in checks["vector-index-rebuild"]["detail"]
    assert "extra_operator_index" in checks["document-chunk-indexes-kept"]["message"]

    run = run_cli("run", *common)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    assert "vector index: rebuilt idx_document_chunk_vector (ivfflat, same name and definition): it was built on " \
           "0 rows before the load" in run.stdout, run.stdout
    after = _index(target_url)
    assert after[1] == before[1]  # the same definition: HridaAI's startup check accepts it
    assert after[0] != before[0]  # a new relfilenode: rebuilt, its lists trained on the loaded vectors
    assert query(target_url, "SELECT relfilenode FROM pg_class WHERE relname = 'extra_operator_index'")[0][0] == extra
    assert query(target_url, "SELECT count(*) FROM document_chunk")[0][0] > 100

    verify = run_cli("verify", *common)
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr


def test_an_index_built_on_data_is_not_rebuilt(target_url, tmp_path):
    """A resumed or repeated run never rebuilds what it built itself; a plain target gets HridaAI's own rule."""
    common = ["--data-dir", str(SMALL), "--work-dir", str(tmp_path / "w"), "--target", target_url,
              "--log-format", "none"]
    run = run_cli("run", *common)
    assert run.returncode == 0, run.stderr
    assert "vector index: rebuilt" not in run.stdout
    detail = query(target_url, "SELECT detail FROM hridaai_migrate.step WHERE name = 'vector-index-before'")[0][0]
    assert json.loads(detail) == {"method": None, "rows": 0}
