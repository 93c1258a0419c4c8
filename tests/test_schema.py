"""The target created from the catalog equals what HridaAI's own migrations create (pg_dump --schema-only)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import SMALL, query, run_cli
from migrator import embedded

REFERENCE = Path(__file__).parent / "data" / "pg-schema-0bd252b206fb.sql"
PG_DUMP = embedded.bin_dir() / "pg_dump"


def normalise(dump: str) -> list[str]:
    """Statements without comments/SETs, the vector extension, document_chunk and the tool's own schema."""
    body = "\n".join(line for line in dump.splitlines()
                     if line.strip() and not line.startswith(("--", "SET ", "SELECT pg_catalog.set_config")))
    statements = [re.sub(r"\s+", " ", s).strip().rstrip(";") for s in body.split(";\n")]  # the last keeps its ;
    skip = ("document_chunk", "hridaai_migrate", "EXTENSION", "\\restrict", "\\unrestrict")
    return sorted(s for s in statements if s and not any(k in s for k in skip))


def test_created_schema_equals_reference_dump(target_url, tmp_path):
    common = ["--data-dir", str(SMALL), "--work-dir", str(tmp_path / "w"), "--target", target_url,
              "--log-format", "none"]
    assert run_cli("run", *common).returncode == 0
    dumped = subprocess.run([str(PG_DUMP), "--schema-only", "--no-owner", "--no-privileges", target_url],
                            capture_output=True, text=True, check=True).stdout
    ours, ref = normalise(dumped), normalise(REFERENCE.read_text())
    assert len(ref) > 150
    assert ours == ref, sorted(set(ours) ^ set(ref))[:10]


def test_existing_mode_detects_a_schema_that_differs(target_url, tmp_path):
    # a target "made by HridaAI": the reference DDL + its alembic row; then one column dropped
    psql = PG_DUMP.with_name("psql")
    subprocess.run([str(psql), "-q", "-v", "ON_ERROR_STOP=1", target_url, "-f", str(REFERENCE)],
                   capture_output=True, check=True)
    query(target_url, "INSERT INTO alembic_version VALUES ('0bd252b206fb')")
    query(target_url, "INSERT INTO config (key, value) VALUES ('seeded', '1')")
    common = ["--data-dir", str(SMALL), "--work-dir", str(tmp_path / "w"), "--target", target_url]
    plan = run_cli("plan", *common)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "existing" in plan.stdout and "only HridaAI's seed rows" in plan.stdout
    query(target_url, "ALTER TABLE chat DROP COLUMN summary")
    plan = run_cli("plan", *common)
    assert plan.returncode == 4
    assert "schema-differs" in plan.stdout and "summary" in plan.stdout


@pytest.mark.parametrize("rev", ["0bd252b206fb"])
def test_catalog_lists_known_revisions(rev):
    out = run_cli("schema", "list")
    assert rev in out.stdout.split()
