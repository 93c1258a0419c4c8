"""SECURITY.md, tested: hostile identifiers stay identifiers, private files, a read-only source, no telemetry.

Secrets in outputs are checked for every command of the suite by conftest.run_cli (and by tests/test_secrets.py);
TLS by tests/test_tls.py.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

from conftest import ROOT, SMALL, query, run_cli, tree_digest

TABLE = 'x"; DROP TABLE user; --'
COLUMN = 'y"; DROP TABLE chat; --'
NOTE_COLUMN = 'z"; DROP TABLE auth; --'
SCHEMA = 's"; DROP TABLE note; --'


def _qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def hostile_source(data: Path) -> None:
    """The small fixture plus a table and a column whose names are SQL injections, and one row for each."""
    data.mkdir()
    shutil.copy(SMALL / "hridaai.db", data / "hridaai.db")
    shutil.copytree(SMALL / "vector_db", data / "vector_db")
    db = sqlite3.connect(data / "hridaai.db")
    db.execute(f"CREATE TABLE {_qi(TABLE)} (id INTEGER PRIMARY KEY, {_qi(COLUMN)} TEXT)")
    db.execute(f"INSERT INTO {_qi(TABLE)} VALUES (1, ?)", ("v'); DROP TABLE auth; --",))
    db.execute(f"ALTER TABLE note ADD COLUMN {_qi(NOTE_COLUMN)} TEXT")
    db.execute(f"UPDATE note SET {_qi(NOTE_COLUMN)} = 'hostile'")
    db.commit()
    db.close()


def test_hostile_table_column_and_schema_names_stay_names(target_url, tmp_path):
    data, work = tmp_path / "data", tmp_path / "w"
    hostile_source(data)
    before = tree_digest(data)
    mtimes = {p: p.stat().st_mtime_ns for p in data.rglob("*")}
    common = ["--data-dir", str(data), "--work-dir", str(work), "--target", target_url, "--log-format", "none"]
    env = {"DATABASE_SCHEMA": SCHEMA}
    for command in ("plan", "run", "verify"):
        proc = run_cli(command, *common, env=env)
        assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-2000:])
    source = sqlite3.connect(f"file:{data / 'hridaai.db'}?mode=ro", uri=True)
    for table in ("user", "chat", "auth", "note"):  # every table the names try to drop is there, complete
        want = source.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        assert query(target_url, f'SELECT count(*) FROM {_qi(SCHEMA)}.{_qi(table)}')[0][0] == want, table
    kept = query(target_url, "SELECT key, row_json FROM hridaai_migrate.quarantine WHERE unit = $1", TABLE)
    assert [r["key"] for r in kept] == ["[1]"] and "DROP TABLE auth" in kept[0]["row_json"]  # kept, as data
    assert query(target_url, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", SCHEMA)[0][0] == 1
    assert tree_digest(data) == before  # the source: same bytes ...
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*")} == mtimes  # ... and never written to
    _assert_private(work)


def _assert_private(work: Path) -> None:
    """Snapshot, scratch files and reports: directories 0700, files 0600."""
    loose = [f"{oct(p.stat().st_mode & 0o777)} {p.relative_to(work)}" for p in [work, *work.rglob("*")]
             if "embedded-pg" not in p.parts and p.stat().st_mode & 0o777 != (0o700 if p.is_dir() else 0o600)]
    assert not loose, loose
    assert (work / "snapshot" / "manifest.json").exists() and (work / "reports" / "plan.json").exists()
    assert not (work / "chroma-read").exists()  # the direct reader needs no second copy of the store


def test_snapshot_reads_a_read_only_mounted_source(tmp_path):
    """The data dir mounted read-only (root may bind-mount here): any write attempt would fail the snapshot."""
    data, mnt = tmp_path / "data", tmp_path / "ro"
    shutil.copytree(SMALL, data)
    mnt.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "--bind", str(data), str(mnt)]).returncode == 0
    try:
        if mounted:
            assert subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)]).returncode == 0
            probe = subprocess.run(["touch", str(mnt / "probe")], capture_output=True)
            assert probe.returncode != 0  # really read-only
        source = mnt if mounted else data
        before = tree_digest(source)
        snap = run_cli("snapshot", "--data-dir", str(source), "--work-dir", str(tmp_path / "w"))
        assert snap.returncode == 0, snap.stderr
        assert tree_digest(source) == before
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)])


def _chromadb_client_calls() -> list[tuple[str, int, set[str]]]:
    """(file, line, keyword names) of every chromadb client constructed in migrator/ (in the modules that import
    chromadb: google.cloud.storage has a `Client` too)."""
    found = []
    for path in (ROOT / "migrator").rglob("*.py"):
        text = path.read_text()
        if not re.search(r"^\s*(import chromadb|from chromadb)", text, re.M):
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                    "PersistentClient", "HttpClient", "Client", "EphemeralClient", "CloudClient", "AsyncHttpClient"):
                found.append((path.name, node.lineno, {k.arg for k in node.keywords}))
    return found


def test_every_chromadb_client_has_telemetry_off():
    from migrator.sources.chroma import client as chroma

    calls = _chromadb_client_calls()
    assert len(calls) >= 3  # PersistentClient and HttpClient in sources/chroma/client.py, the version probe
    assert all("settings" in keywords for _, _, keywords in calls), calls
    assert chroma._settings().anonymized_telemetry is False
    for name in ("client.py", "store.py"):
        text = (ROOT / "migrator" / "sources" / "chroma" / name).read_text()
        assert "settings=_settings()" in text or "anonymized_telemetry=False" in text, name
