"""plan, run and verify on real HridaAI data dirs, into a real PostgreSQL; the source stays byte-identical."""

from __future__ import annotations

import json

import pytest

from conftest import SMALL, UPGRADED, query, run_cli, tree_digest


@pytest.mark.parametrize("fixture", [SMALL, UPGRADED], ids=["small", "upgraded-from-0.6.26"])
def test_plan_run_verify(fixture, target_url, tmp_path):
    before = tree_digest(fixture)
    work = tmp_path / "work"
    common = ["--data-dir", str(fixture), "--work-dir", str(work), "--target", target_url, "--log-format", "json"]
    plan = run_cli("plan", *common, "--json")
    assert plan.returncode == 0, plan.stderr
    doc = json.loads(plan.stdout)
    assert doc["mode"] == "create" and doc["source_revision"] == "0bd252b206fb"
    assert not [c for c in doc["checks"] if c["severity"] == "error"]
    run = run_cli("run", *common)
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert any(e.get("stage") == "load" and e.get("state") == "done" for e in events)
    # chromadb's scratch copy is gone once the command ends: chromadb rewrites index files from buffers it does not
    # clear (a test password of the target's URL was once found in one); made again when next needed
    if any("chromadb" in str(e.get("read_by", "")) for e in events):
        assert not (work / "chroma-read").exists()
    verify = run_cli("verify", *common, "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    report = json.loads(verify.stdout)
    assert report["ok"] and report["sample"]["compared"] > 0
    assert report["alembic"]["target"] == "0bd252b206fb"
    assert tree_digest(fixture) == before
    manifest = json.loads((work / "snapshot" / "manifest.json").read_text())
    assert manifest["source_revision"] == "0bd252b206fb" and manifest["files"]
    assert all(len(f["sha256"]) == 64 for f in manifest["files"])
    assert oct((work / "snapshot").stat().st_mode & 0o777) == "0o700"
    assert all(oct((work / "snapshot" / f["path"]).stat().st_mode & 0o777) == "0o600" for f in manifest["files"])


def test_rows_counts_add_up_and_nul_policy_reported(target_url, tmp_path):
    work = tmp_path / "w"
    common = ["--data-dir", str(UPGRADED), "--work-dir", str(work), "--target", target_url, "--log-format", "none"]
    assert run_cli("run", *common).returncode == 0
    title = query(target_url, "SELECT title FROM chat WHERE id = $1", "2a59af11-14af-4eff-83c5-b9c70463c82a")[0][0]
    assert "\x00" not in title and title
    fixups = [json.loads(line) for line in (work / "reports" / "fixups.jsonl").read_text().splitlines()]
    assert {(f["unit"], f["column_name"], f["policy"]) for f in fixups} >= {
        ("chat", "title", "nul_in_text"), ("chat", "chat", "json_nul_escape")}
    quarantine = (work / "reports" / "quarantine.jsonl").read_text().splitlines()
    assert len(quarantine) == 18  # migratehistory: not in HridaAI's schema, kept aside, counted
    # every json value can be extracted with ->> (what HridaAI's chat search needs)
    for table, column in query(target_url, "SELECT table_name, column_name FROM information_schema.columns "
                                           "WHERE table_schema = 'public' AND data_type = 'json'"):
        query(target_url, f'SELECT count(*) FROM "{table}" WHERE ("{column}"::jsonb)::text IS NOT NULL')
