"""Preflight refusals: an older HridaAI source revision, and an existing-mode target HridaAI already used."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess

from test_schema import PG_DUMP, REFERENCE

from conftest import SMALL, query, run_cli

OLD_REVISION = "d4c1a8e37b62"  # HridaAI 0.11.1; 0.12.0/0.12.1 added the revisions after it
ADDED_TABLES = ["skill_history", "model_history", "tool_history", "function_history", "app"]
ADDED_COLUMNS = [("auth", "mfa"), ("auth", "session_stamp"), ("group", "parent_group_id"), ("skill", "version_id"),
                 ("skill", "data"), ("model", "version_id"), ("tool", "version_id"), ("function", "version_id"),
                 ("channel_member", "app_id"), ("message", "app_id")]


def older_source(dest) -> None:
    """The small fixture as HridaAI 0.11.1 left it: stamped d4c1a8e37b62, without what 0.12.x added."""
    dest.mkdir()
    shutil.copyfile(SMALL / "hridaai.db", dest / "hridaai.db")
    db = sqlite3.connect(dest / "hridaai.db", isolation_level=None)
    try:
        for table in ADDED_TABLES:
            db.execute(f'DROP TABLE "{table}"')
        for table, column in ADDED_COLUMNS:
            _drop_column(db, table, column)
        db.execute("UPDATE alembic_version SET version_num = ?", (OLD_REVISION,))
    finally:
        db.close()


def _drop_column(db, table: str, column: str) -> None:
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql LIKE ?",
                              (table, f"%{column}%")).fetchall():
        db.execute(f'DROP INDEX "{name}"')
    try:
        db.execute(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
        return
    except sqlite3.OperationalError:  # named in a constraint: rebuild the table without the column and constraint
        pass
    sql = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()[0]
    body = sql.split("(", 1)[1].rsplit(")", 1)[0]
    parts = ",\n".join(p for p in re.split(r",\s*\n", body) if column not in p)
    keep = ", ".join(f'"{r[1]}"' for r in db.execute(f'PRAGMA table_info("{table}")') if r[1] != column)
    db.execute(f'CREATE TABLE "{table}_rebuilt" ({parts})')
    db.execute(f'INSERT INTO "{table}_rebuilt" ({keep}) SELECT {keep} FROM "{table}"')
    db.execute(f'DROP TABLE "{table}"')
    db.execute(f'ALTER TABLE "{table}_rebuilt" RENAME TO "{table}"')


def test_older_source_revision_is_refused_with_instructions(target_url, tmp_path):
    older_source(tmp_path / "data")
    common = ["--data-dir", str(tmp_path / "data"), "--work-dir", str(tmp_path / "w"), "--target", target_url,
              "--log-format", "none"]
    plan = run_cli("plan", *common)
    assert plan.returncode == 4, plan.stdout + plan.stderr
    out = plan.stdout + plan.stderr
    assert f"source revision  {OLD_REVISION}" in plan.stdout  # where the source is
    assert "catalog knows: 0bd252b206fb" in plan.stdout  # what the toolkit knows
    assert "revision-unknown" in plan.stdout
    assert "upgrade HridaAI on a copy of the SQLite data first" in out and "existing mode" in out  # what to do
    doc = json.loads(run_cli("plan", *common, "--json").stdout)
    check = next(c for c in doc["checks"] if c["code"] == "revision-unknown")
    assert check["severity"] == "error" and OLD_REVISION in check["message"] and "0bd252b206fb" in check["detail"]
    run = run_cli("run", *common)
    assert run.returncode == 4 and "error-level checks" in run.stderr and "revision-unknown" in run.stderr
    assert not query(target_url, "SELECT 1 FROM pg_tables WHERE schemaname = 'public'")  # nothing was written


def hridaai_made_target(url: str, *, signed_up: bool) -> None:
    """A target HridaAI's own migrations created and HridaAI started once (seeded config; maybe a first user)."""
    psql = PG_DUMP.with_name("psql")
    subprocess.run([str(psql), "-q", "-v", "ON_ERROR_STOP=1", url, "-f", str(REFERENCE)], capture_output=True,
                   check=True)
    query(url, "INSERT INTO alembic_version VALUES ('0bd252b206fb')")
    query(url, "INSERT INTO config (key, value, updated_at) VALUES ('ui.default_locale', '\"en-US\"', 1), "
               "('webui.url', '\"http://localhost:8080\"', 1)")
    if signed_up:
        query(url, "INSERT INTO \"user\" (id, name, email, role, created_at, updated_at, last_active_at) VALUES "
                   "('first-admin', 'Admin', 'someone@example.org', 'admin', 1, 1, 1)")
        query(url, "INSERT INTO auth (id, email, password, active) VALUES ('first-admin', 'someone@example.org', "
                   "'$2b$12$x', true)")


def test_existing_target_with_a_signed_up_user_is_refused_unless_force_clear(target_url, tmp_path):
    hridaai_made_target(target_url, signed_up=True)
    common = ["--data-dir", str(SMALL), "--work-dir", str(tmp_path / "w"), "--target", target_url,
              "--log-format", "none"]
    plan = run_cli("plan", *common, "--json")
    assert plan.returncode == 4, plan.stderr
    doc = json.loads(plan.stdout)
    assert doc["mode"] == "existing" and "holds data in 2 tables" in doc["target_state"]
    held = next(c for c in doc["checks"] if c["code"] == "target-holds-data")
    assert held["severity"] == "error" and "user=1" in held["detail"] and "auth=1" in held["detail"]
    assert "config" not in held["detail"] and "--force-clear" in held["hint"]
    assert run_cli("run", *common).returncode == 4
    assert query(target_url, 'SELECT id FROM "user"')[0][0] == "first-admin"  # refused: nothing touched
    run = run_cli("run", *common, "--force-clear")
    assert run.returncode == 0, run.stderr
    verify = run_cli("verify", *common)
    assert verify.returncode == 0, verify.stdout[-2000:]
    assert not query(target_url, "SELECT 1 FROM \"user\" WHERE id = 'first-admin'")
    source = sqlite3.connect(f"file:{SMALL / 'hridaai.db'}?mode=ro", uri=True)
    assert query(target_url, "SELECT count(*) FROM config")[0][0] == source.execute(
        "SELECT count(*) FROM config").fetchone()[0]


def test_existing_target_with_only_seed_rows_is_used(target_url, tmp_path):
    hridaai_made_target(target_url, signed_up=False)
    common = ["--data-dir", str(SMALL), "--work-dir", str(tmp_path / "w"), "--target", target_url,
              "--log-format", "none"]
    run = run_cli("run", *common)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    assert "(existing" in run.stdout
    source = sqlite3.connect(f"file:{SMALL / 'hridaai.db'}?mode=ro", uri=True)
    want = {k: v if isinstance(v, str) else json.dumps(v) for k, v in source.execute("SELECT key, value FROM config")}
    got = {k: v for k, v in query(target_url, "SELECT key, value::text FROM config")}
    assert got == want  # HridaAI's seed rows were replaced by the source's, nothing else was in the way


def test_check_constraints_of_the_target_are_evaluated_on_the_source():
    """A source table without the target's CHECK (a legacy shape): plan names the rows PostgreSQL will refuse."""
    from migrator.catalog import schema as catalog
    from migrator.plan import checks
    from migrator.plan.model import ColumnPlan, TablePlan

    target = catalog.for_revision("0bd252b206fb").tables["channel_member"]
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE channel_member (id TEXT PRIMARY KEY, channel_id TEXT, user_id TEXT, app_id TEXT)")
    db.executemany("INSERT INTO channel_member VALUES (?, 'c', ?, ?)",
                   [("ok-user", "u", None), ("ok-app", None, "a"), ("both", "u", "a"), ("neither", None, None)])
    columns = [ColumnPlan(c.name, "TEXT" if c.name in ("id", "channel_id", "user_id", "app_id") else None, c.type,
                          c.nullable) for c in target.columns]
    found = checks._check_constraints(db, TablePlan("channel_member", "load", columns=columns, key=["id"]), target)
    assert len(found) == 1 and "ck_channel_member_identity" in found[0].message
    assert found[0].detail == 'keys: ["both"], ["neither"]' and found[0].severity == "warning"


def test_unique_checks_skip_only_what_sqlite_enforces_the_same_way():
    """A key SQLite already keeps unique (a full BINARY unique index) is not grouped again; a NOCASE or partial
    unique index, or none, does not count: their duplicates are still found."""
    from migrator.catalog import schema as catalog
    from migrator.plan import checks
    from migrator.plan.model import ColumnPlan, TablePlan

    target = catalog.for_revision("0bd252b206fb").tables["tag"]
    db = sqlite3.connect(":memory:")
    db.create_function("pg_lower", 1, lambda s: s.lower() if isinstance(s, str) else s, deterministic=True)
    db.execute("CREATE TABLE tag (id TEXT, name TEXT, user_id TEXT, meta TEXT)")
    db.execute("CREATE UNIQUE INDEX nocase_pk ON tag (id COLLATE NOCASE, user_id)")
    db.execute("CREATE UNIQUE INDEX partial_pk ON tag (id, user_id) WHERE meta IS NULL")
    db.execute("CREATE UNIQUE INDEX one_col ON tag (name)")
    db.executemany("INSERT INTO tag VALUES (?, ?, 'u', '{}')", [("a", "x"), ("b", "y")])
    assert checks._unique_in_sqlite(db, "tag") == {frozenset(['"name"'])}
    db.execute("DROP INDEX nocase_pk")
    db.execute("INSERT INTO tag VALUES ('a', 'z', 'u', '{}')")  # (id, user_id) twice: the target's primary key
    columns = [ColumnPlan(c.name, "TEXT", c.type, c.nullable) for c in target.columns]
    found = checks._unique_checks(db, TablePlan("tag", "load", columns=columns, key=["id", "user_id"]), target)
    assert [c.code for c in found] == ["unique-conflict"] and '["a", "u"]' in found[0].detail
    db.execute("DELETE FROM tag WHERE name = 'z'")
    db.execute("CREATE UNIQUE INDEX full_pk ON tag (user_id, id)")
    assert frozenset(['"id"', '"user_id"']) in checks._unique_in_sqlite(db, "tag")
    assert checks._unique_checks(db, TablePlan("tag", "load", columns=columns, key=["id", "user_id"]), target) == []
