"""Existing mode into tables HridaAI's Peewee-era migrations made: `id varchar(255)` with a UNIQUE index and no
primary key (older installs' PostgreSQL databases keep them). Rows are keyed by that unique index — in verify, in
fixups and in quarantine — never by SQLite's rowid, so `run` and `verify` both exit 0 and reports name ids."""

from __future__ import annotations

import json
import shutil
import sqlite3

from test_preflight import hridaai_made_target

from conftest import SMALL, query, run_cli

PEEWEE_TABLES = ("auth", "chat", "file", "function", "memory")
OLD_REVISION = "3af16a1c9fb6"  # HridaAI 0.6.26: a revision the catalog does not know, so existing mode it is


def _older_install(tmp_path):
    """The small fixture as if it were at an older revision (the path `plan` recommends for those)."""
    data = tmp_path / "data"
    shutil.copytree(SMALL, data)
    db = sqlite3.connect(data / "hridaai.db")
    db.execute("UPDATE alembic_version SET version_num = ?", (OLD_REVISION,))
    chat_id = db.execute("SELECT id FROM chat ORDER BY rowid LIMIT 1").fetchone()[0]
    db.execute("UPDATE chat SET title = title || char(0) WHERE id = ?", (chat_id,))  # a fixup to be keyed
    db.commit()
    db.close()
    return data, chat_id


def _peewee_shaped(url: str) -> None:
    """The schema HridaAI of that release made: the tables the 0.1-0.3 Peewee migrations created are keyed as
    Peewee keyed them (a UNIQUE index on id, no primary key)."""
    hridaai_made_target(url, signed_up=False)
    query(url, "UPDATE alembic_version SET version_num = $1", OLD_REVISION)
    for table in PEEWEE_TABLES:
        pk = query(url, "SELECT conname FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'p'",
                   table)[0][0]
        query(url, f'ALTER TABLE "{table}" DROP CONSTRAINT "{pk}" CASCADE')
        query(url, f'CREATE UNIQUE INDEX "{table}_id" ON "{table}" (id)')


def test_tables_without_a_primary_key_are_keyed_by_their_unique_index(target_url, tmp_path):
    _peewee_shaped(target_url)
    data, chat_id = _older_install(tmp_path)
    common = ["--data-dir", str(data), "--work-dir", str(tmp_path / "w"), "--target", target_url,
              "--log-format", "none"]
    plan = run_cli("plan", *common, "--json")
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr
    doc = json.loads(plan.stdout)
    tables = {t["name"]: t for t in doc["tables"]}
    for table in PEEWEE_TABLES:
        assert tables[table]["key"] == ["id"] and tables[table]["key_index"] == f"{table}_id", tables[table]
    notes = [c for c in doc["checks"] if c["code"] == "key-from-unique-index"]
    assert sorted(n["message"].split()[0] for n in notes) == sorted(PEEWEE_TABLES)

    run = run_cli("run", *common)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    verify = run_cli("verify", *common, "--json")
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr
    report = json.loads(verify.stdout)
    for table in PEEWEE_TABLES:
        entry = report["tables"][table]
        assert entry["source_rows"] == entry["target_rows"] + entry["quarantined"], entry
    fixups = [json.loads(line) for line in (tmp_path / "w" / "reports" / "fixups.jsonl").read_text().splitlines()]
    keys = [json.loads(f["key"]) for f in fixups if f["unit"].split("#")[0] == "chat"]
    assert keys == [[chat_id]], fixups  # the id an operator can look up, not a rowid


def test_a_table_without_any_key_is_compared_as_a_multiset_of_full_rows(target_url, tmp_path):
    _peewee_shaped(target_url)
    query(target_url, 'DROP INDEX "memory_id"')  # memory: no primary key, no unique index at all
    data, _ = _older_install(tmp_path)
    db = sqlite3.connect(data / "hridaai.db")
    n_memory = db.execute("SELECT count(*) FROM memory").fetchone()[0]
    db.close()
    assert n_memory >= 2
    common = ["--data-dir", str(data), "--work-dir", str(tmp_path / "w"), "--target", target_url,
              "--log-format", "none"]
    plan = json.loads(run_cli("plan", *common, "--json").stdout)
    assert {t["name"]: t["key"] for t in plan["tables"]}["memory"] == []
    assert [c["message"].split()[0] for c in plan["checks"] if c["code"] == "no-key-multiset"] == ["memory"]
    assert run_cli("run", *common).returncode == 0

    verify = run_cli("verify", *common, "--json")
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr
    entry = json.loads(verify.stdout)["tables"]["memory"]
    assert entry["match"] and entry["compared_as"].startswith("multiset") and entry["target_rows"] == n_memory

    # one row changed, one row doubled: the multiset sees both, names rows by digest, never by a rowid
    query(target_url, "UPDATE memory SET content = content || '!' WHERE id = (SELECT min(id) FROM memory)")
    query(target_url, "INSERT INTO memory SELECT * FROM memory WHERE id = (SELECT max(id) FROM memory)")
    verify = run_cli("verify", *common, "--json")
    assert verify.returncode == 3, verify.stdout[-3000:] + verify.stderr
    report = json.loads(verify.stdout)
    entry = report["tables"]["memory"]
    assert not entry["match"]
    assert len(entry["missing"]) == 1 and len(entry["extra"]) == 2 and entry["changed"] == [], entry
    assert all(k.startswith("row:") for k in entry["missing"] + entry["extra"]), entry
    problems = [p for p in report["problems"] if p.startswith("memory:")]
    assert any("1 rows missing in target (no key" in p for p in problems), problems
    assert any("rows extra in target (no key" in p for p in problems), problems
