"""A hostile source (real fixture + injected cases): every value carried, or accounted for by key in the reports.

The committed fixture is only read: the hostile copy is built under a temporary directory (tests/hostile.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import uuid
from types import SimpleNamespace

import asyncpg
import pytest

import hostile
from conftest import _with_db, query, run_cli


def _admin(admin_url: str, sql: str) -> None:
    async def go():
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


@contextlib.contextmanager
def scratch_db(admin_url: str):
    """A fresh database for one scenario, dropped afterwards."""
    name = "h_" + uuid.uuid4().hex[:10]
    _admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield _with_db(admin_url, name)
    finally:
        _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def migrated(pg_admin_url, tmp_path_factory):
    """plan --json, run and verify --json of the hostile source into a fresh database (once for this module)."""
    root = tmp_path_factory.mktemp("hostile")
    expected = hostile.build(root / "data")
    with scratch_db(pg_admin_url) as url:
        yield _migrate(root, url, expected)


def _migrate(root, url: str, expected: hostile.Expected) -> SimpleNamespace:
    common = ["--data-dir", str(root / "data"), "--work-dir", str(root / "work"), "--target", url,
              "--log-format", "none"]
    plan = run_cli("plan", *common, "--json")
    run = run_cli("run", *common)
    verify = run_cli("verify", *common, "--json")
    reports = root / "work" / "reports"
    return SimpleNamespace(expected=expected, url=url, plan=plan, run=run, verify=verify,
                           db=root / "data" / "hridaai.db", fixups=_jsonl(reports / "fixups.jsonl"),
                           quarantine=_jsonl(reports / "quarantine.jsonl"))


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _source(db, sql: str, *args):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.text_factory = bytes
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_plan_lists_every_case_with_its_key(migrated):
    assert migrated.plan.returncode == 0, migrated.plan.stderr
    doc = json.loads(migrated.plan.stdout)
    checks = doc["checks"]
    assert not [c for c in checks if c["severity"] == "error"]

    def listed(code: str, prefix: str, key: str) -> bool:
        return any(c["code"] == code and c["message"].startswith(prefix) and key in (c["detail"] or "")
                   for c in checks)

    for table, key, column, policy in migrated.expected.fixups:
        code = "orphans" if policy == "orphan_set_null" else f"policy:{policy}"
        assert listed(code, f"{table}.{column}", key), (table, key, column, policy)
    codes = {"orphan": "orphans"}
    for table, key, policy in migrated.expected.quarantine:
        assert listed(codes.get(policy, f"policy:{policy}"), f"{table}", key), (table, key, policy)
    chat = next(t for t in doc["tables"] if t["name"] == "chat")
    created = next(c for c in chat["columns"] if c["name"] == "created_at")
    assert created["source_type"] == "DATETIME" and "epoch integers" in created["conversion"]


def test_run_and_verify_pass(migrated):
    assert migrated.run.returncode == 0, migrated.run.stderr
    assert migrated.verify.returncode == 0, migrated.verify.stdout[-3000:] + migrated.verify.stderr
    report = json.loads(migrated.verify.stdout)
    assert report["ok"] and report["tables"]["chat_message"]["quarantined"] == 8


def test_every_source_row_is_in_the_target_or_in_quarantine(migrated):
    tables = [r[0].decode() for r in _source(migrated.db, "SELECT name FROM sqlite_master WHERE type = 'table' "
                                                          "AND name NOT LIKE 'sqlite_%' AND name != 'alembic_version'")]
    quarantined = {r[0]: r[1] for r in query(migrated.url, "SELECT unit, count(*) FROM hridaai_migrate.quarantine "
                                                           "GROUP BY unit")}
    assert sum(quarantined.values()) == len(migrated.expected.quarantine)
    for table in tables:
        source = _source(migrated.db, f'SELECT count(*) FROM "{table}"')[0][0]
        target = query(migrated.url, f'SELECT count(*) FROM public."{table}"')[0][0]
        assert source == target + quarantined.get(table, 0), table
    # and a quarantined row is really not in the target
    for table, key, _ in migrated.expected.quarantine:
        assert not query(migrated.url, f'SELECT 1 FROM public."{table}" WHERE id = $1', json.loads(key)[0])


def test_reports_account_for_every_affected_row(migrated):
    got_q = {(q["unit"], q["key"], q["policy"]) for q in migrated.quarantine}
    assert got_q == migrated.expected.quarantine
    got_f = {(f["unit"], f["key"], f["column_name"], f["policy"]) for f in migrated.fixups}
    assert migrated.expected.fixups <= got_f, migrated.expected.fixups - got_f
    for unit, key, column, policy in got_f - migrated.expected.fixups:  # the real fixture's own defects
        raw = _source(migrated.db, f'SELECT "{column}" FROM "{unit}" WHERE id = ?', json.loads(key)[0])[0][0]
        assert policy == "json_nul_escape" and b"\\u0000" in raw, (unit, key, column, policy)
    assert not {k for _, k, _ in got_q} & {f[1] for f in got_f}, "a quarantined row has fixups"
    ledger = query(migrated.url, "SELECT count(*) FROM hridaai_migrate.fixup")[0][0]
    assert ledger == len(migrated.fixups)
    ghost = next(q for q in migrated.quarantine if q["key"] == '["key_ghost"]')
    assert json.loads(ghost["row_json"])["data"] == '{"n": "\\u0000"}'  # the full original row, unchanged


def test_values_arrive_as_documented(migrated):
    e, url = migrated.expected, migrated.url

    def one(sql, *args):
        return query(url, sql, *args)[0][0]

    chat_title = next(k for t, k, c, p in e.fixups if (t, c) == ("chat", "title"))
    assert one("SELECT title FROM chat WHERE id = $1", json.loads(chat_title)[0]) == "HelloWorld"
    user = json.loads(next(k for t, k, c, p in e.fixups if c == "username"))[0]
    assert one('SELECT username FROM "user" WHERE id = $1', user) == "u" * 50
    bio_user = json.loads(next(k for t, k, c, p in e.fixups if c == "bio"))[0]
    assert one('SELECT bio FROM "user" WHERE id = $1', bio_user) == "Cafe\ufffd\ufffd é"
    assert one("SELECT created_at::text FROM config_old WHERE id = 1") == "2024-01-01 00:00:00"
    assert one('SELECT parent_group_id FROM "group" WHERE id = $1', hostile.GROUP) is None
    assert one("SELECT directory_id FROM knowledge_file WHERE id = 'kf-3'") is None
    assert one("SELECT count(*) FROM chat WHERE id = 'big-chat' AND octet_length(chat::text) > 30 * 1024 * 1024")
    nan = json.loads(next(k for t, k, c, p in e.fixups if (t, p) == ("feedback", "json_nan")))[0]
    assert one("SELECT data::text FROM feedback WHERE id = $1", nan) == '{"rating": null, "big": 1e400}'
    msg = json.loads(next(k for t, k, c, p in e.fixups if (t, p) == ("message", "json_nan")))[0]
    assert one("SELECT data->>'s' FROM message WHERE id = $1", msg) == "NaN"  # a string "NaN" is not touched
    # DATETIME-declared epoch integers arrive equal; JSON 'null' and SQL NULL stay distinct
    src = {r[0].decode(): int(r[1]) for r in _source(migrated.db, "SELECT id, created_at FROM chat "
                                                                  "WHERE typeof(created_at) = 'integer'")}
    dst = {r[0]: r[1] for r in query(url, "SELECT id, created_at FROM chat")}
    assert src and all(dst[k] == v for k, v in src.items())
    assert one("SELECT count(*) FROM memory WHERE meta::text = 'null'") >= 1
    assert one("SELECT count(*) FROM memory WHERE meta IS NULL") >= 1
    assert one("SELECT count(*) FROM memory WHERE json_typeof(meta) = 'string'") == 1  # double-encoded: kept


def test_every_json_value_can_be_extracted(migrated):
    url = migrated.url
    columns = query(url, "SELECT table_name, column_name FROM information_schema.columns "
                         "WHERE table_schema = 'public' AND data_type = 'json'")
    assert len(columns) > 50
    rows = 0
    for table, column in columns:
        c, t = f'"{column}"', f'"{table}"'
        rows += query(url, f"SELECT count(*) FROM {t} WHERE {c} IS NOT NULL AND ({c}::jsonb) IS NOT NULL")[0][0]
        query(url, f"SELECT count(je.v) FROM {t}, json_each_text({t}.{c}) AS je(k, v) "
                   f"WHERE json_typeof({t}.{c}) = 'object'")
        query(url, f"SELECT count({c}->>'content') FROM {t} WHERE json_typeof({c}) = 'object'")
    assert rows > 1000
    with pytest.raises(asyncpg.UntranslatableCharacterError):  # the check has teeth: what it would have caught
        query(url, "SELECT '{\"a\": \"\\u0000\"}'::json->>'a'")


def test_duplicate_lowercased_emails_refuse_the_plan(pg_admin_url, tmp_path):
    expected = hostile.build(tmp_path / "data", duplicates=True, big_chat=False)
    with scratch_db(pg_admin_url) as url:
        _refused_for_duplicates(tmp_path, url, expected)


def _refused_for_duplicates(tmp_path, url: str, expected: hostile.Expected) -> None:
    common = ["--data-dir", str(tmp_path / "data"), "--work-dir", str(tmp_path / "w"), "--target", url,
              "--log-format", "none"]
    plan = run_cli("plan", *common, "--json")
    assert plan.returncode == 4, plan.stderr
    conflicts = [c for c in json.loads(plan.stdout)["checks"] if c["code"] == "unique-conflict"]
    assert {c["severity"] for c in conflicts} == {"error"}
    for table, keys in expected.unique_conflicts.items():
        check = next(c for c in conflicts if c["message"].startswith(f"{table}:"))
        assert all(hostile.key(k) in check["detail"] for k in keys), check
        assert "HridaAI" in check["hint"]
    email = next(c for c in conflicts if c["message"].startswith("user:"))
    assert "uq_user_email_lower" in email["message"] and '"admin@hridaai.local"' in email["detail"]
    run = run_cli("run", *common)
    assert run.returncode == 4 and "error-level checks" in run.stderr
    assert not query(url, "SELECT 1 FROM pg_tables WHERE schemaname = 'public'")


def test_hostile_fixture_leaves_the_committed_fixture_alone():
    from conftest import SMALL

    names = [r[0] for r in sqlite3.connect(f"file:{SMALL / 'hridaai.db'}?mode=ro", uri=True).execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'uq_user_email_lower'")]
    assert names == ["uq_user_email_lower"]
    assert not re.search(r"DATETIME", sqlite3.connect(f"file:{SMALL / 'hridaai.db'}?mode=ro", uri=True).execute(
        "SELECT sql FROM sqlite_master WHERE name = 'chat'").fetchone()[0])
