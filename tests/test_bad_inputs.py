"""The bad-input catalogue (README "Bad inputs"): one case per row.

Each case builds one bad input, runs one command, and asserts: the exit code documented for it; one ERROR line
saying what is wrong and a HINT saying what to do (or, for warnings, the plan's line); no traceback; the source's
bytes unchanged; the target unchanged by the command (its tables, row counts and ledger as before).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import pytest

import conftest
from conftest import MIGRATE, ROOT, SMALL, UPGRADED, query, run_cli, tree_digest

WRONG = "wrong-pw-" + uuid.uuid4().hex[:8]
RIGHT = "right-pw-" + uuid.uuid4().hex[:8]
conftest.SECRETS.update({WRONG, RIGHT})


@dataclass
class Ctx:
    """What a case's setup may use and change."""

    tmp: Path
    url: str
    admin: str
    data: Path
    command: list[str] = field(default_factory=lambda: ["run"])
    env: dict = field(default_factory=dict)
    work: Path | None = None
    after: Callable | None = None  # runs once the command returned (e.g. let a stopped run finish)

    def args(self) -> list[str]:
        """The command line."""
        return [*self.command, "--data-dir", str(self.data), "--work-dir", str(self.work or self.tmp / "w"),
                "--target", self.url, "--log-format", "none", "--batch-rows", "5"]


def _copy_small(c: Ctx, *, vectors: bool = True) -> None:
    c.data.mkdir()
    shutil.copy(SMALL / "hridaai.db", c.data / "hridaai.db")
    if vectors:
        shutil.copytree(SMALL / "vector_db", c.data / "vector_db")


def _sqlite(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path)
    for sql in statements:
        db.execute(sql)
    db.commit()
    db.close()


# sources

def no_data_dir(c: Ctx):
    c.data = c.tmp / "does-not-exist"


def no_data_dir_set(c: Ctx):
    c.data.mkdir()
    c.command = ["snapshot"]
    c.env = {"DATA_DIR": ""}
    c.args = lambda: ["snapshot", "--work-dir", str(c.tmp / "w")]


def missing_db(c: Ctx):
    c.data.mkdir()


def not_sqlite(c: Ctx):
    c.data.mkdir()
    (c.data / "hridaai.db").write_text("user,email\nadmin,admin@example.org\n")


def truncated(c: Ctx):
    c.data.mkdir()
    (c.data / "hridaai.db").write_bytes((SMALL / "hridaai.db").read_bytes()[:1_000_000])


def corrupt(c: Ctx):
    """Two index pages of chat overwritten: the header is fine, PRAGMA integrity_check is not."""
    _copy_small(c, vectors=False)
    db = sqlite3.connect(c.data / "hridaai.db")
    roots = [r[0] for r in db.execute("SELECT rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'chat'")]
    page = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    raw = bytearray((c.data / "hridaai.db").read_bytes())
    for root in roots[:2]:
        raw[(root - 1) * page + 8:(root - 1) * page + 200] = b"\x07" * 192
    (c.data / "hridaai.db").write_bytes(bytes(raw))


def wal_without_db(c: Ctx):
    c.data.mkdir()
    (c.data / "hridaai.db-wal").write_bytes((SMALL / "hridaai.db").read_bytes()[:8192])


def empty_db(c: Ctx):
    c.data.mkdir()
    (c.data / "hridaai.db").write_bytes(b"")


def other_app(c: Ctx):
    c.data.mkdir()
    _sqlite(c.data / "hridaai.db", "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)",
            "INSERT INTO orders VALUES (1, 'tea')")


def no_vector_store(c: Ctx):
    _copy_small(c, vectors=False)
    c.command = ["plan"]


def no_chroma_sqlite(c: Ctx):
    _copy_small(c)
    (c.data / "vector_db" / "chroma.sqlite3").unlink()


def corrupt_chroma_sqlite(c: Ctx):
    _copy_small(c)
    path = c.data / "vector_db" / "chroma.sqlite3"
    path.write_bytes(path.read_bytes()[:40_000])


def missing_segments(c: Ctx):
    """1500 vectors (> Chroma's sync threshold): most live only in the HNSW files, which are then lost.

    (With fewer vectors Chroma rebuilds lost segment files from its queue, and nothing is missing.)"""
    from test_vectors import make_store

    _copy_small(c, vectors=False)
    make_store(c.data / "vector_db", {"file-big": (1500, 8)})
    for seg in (c.data / "vector_db").glob("*/data_level0.bin"):
        seg.unlink()
    c.command = ["plan"]


def newer_chroma(c: Ctx):
    _copy_small(c)
    _sqlite(c.data / "vector_db" / "chroma.sqlite3",
            "INSERT INTO migrations SELECT dir, version + 1, 'future.sql', sql, hash FROM migrations "
            "WHERE dir = 'sysdb' ORDER BY version DESC LIMIT 1")


def sqlcipher_wrong_key(c: Ctx):
    from test_sqlcipher import encrypted_copy

    encrypted_copy(c.data, RIGHT)
    c.env = {"DATABASE_TYPE": "sqlite+sqlcipher", "DATABASE_PASSWORD": WRONG}


# targets

def unreachable(c: Ctx):
    _copy_small(c, vectors=False)
    c.url = f"postgresql://hridaai:{WRONG}@127.0.0.1:9/hridaai"


def wrong_password(c: Ctx):
    _copy_small(c, vectors=False)
    from bench import pgserver_ctl

    base = pgserver_ctl.shared_password_server()
    role = "hm_pw_" + uuid.uuid4().hex[:6]
    query(base, f"CREATE ROLE {role} LOGIN PASSWORD '{RIGHT}'")
    host = base.partition("?")[2]
    c.url = f"postgresql://{role}:{WRONG}@/postgres?{host}"


def no_database(c: Ctx):
    _copy_small(c, vectors=False)
    c.url = conftest._with_db(c.url, "no_such_db_" + uuid.uuid4().hex[:6])


def _role(c: Ctx, *grants: str) -> None:
    role = "hm_" + uuid.uuid4().hex[:8]
    db = urlsplit(c.url).path.lstrip("/")
    query(c.admin, f"CREATE ROLE {role} LOGIN")
    for g in grants:
        query(c.url, g.format(role=role, db=db))
    rest = c.url.split("://", 1)[1].rsplit("@", 1)[1]
    c.url = f"postgresql://{role}:{WRONG}@{rest}"


def no_create_privilege(c: Ctx):
    _copy_small(c, vectors=False)
    _role(c)


def no_pgvector_right(c: Ctx):
    _copy_small(c)
    _role(c, 'GRANT CONNECT, CREATE ON DATABASE "{db}" TO {role}', "GRANT CREATE ON SCHEMA public TO {role}")


def holds_data(c: Ctx):
    from test_preflight import hridaai_made_target

    _copy_small(c, vectors=False)
    hridaai_made_target(c.url, signed_up=True)


def other_revision(c: Ctx):
    from test_preflight import OLD_REVISION, hridaai_made_target

    _copy_small(c, vectors=False)
    hridaai_made_target(c.url, signed_up=False)
    query(c.url, "UPDATE alembic_version SET version_num = $1", OLD_REVISION)


def chunk_other_dimension(c: Ctx):
    _copy_small(c)
    query(c.url, "CREATE EXTENSION IF NOT EXISTS vector")
    query(c.url, "CREATE TABLE document_chunk (id text PRIMARY KEY, vector vector(768) NOT NULL, "
                 "collection_name text NOT NULL, text text, vmetadata jsonb)")


def vectors_too_long(c: Ctx):
    _copy_small(c)
    c.env = {"PGVECTOR_INITIALIZE_MAX_VECTOR_LENGTH": "256"}


def chunk_id_collisions(c: Ctx):
    from test_vectors import make_store

    _copy_small(c, vectors=False)
    make_store(c.data / "vector_db", {"file-a": (20, 8), "file-b": (20, 8)}, shared_ids=("dup-1",))
    c.command = ["plan"]


def _start_run(c: Ctx, *, batches: int) -> subprocess.Popen:
    proc = subprocess.Popen(MIGRATE + c.args(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        try:
            if query(c.url, "SELECT count(*) FROM hridaai_migrate.batch")[0][0] >= batches:
                break
        except Exception:  # no ledger yet
            pass
        time.sleep(0.02)
    return proc


def _interrupted(c: Ctx) -> None:
    _copy_small(c)
    proc = _start_run(c, batches=3)
    proc.kill()
    proc.wait()


def other_snapshot(c: Ctx):
    _interrupted(c)
    c.data, c.work = c.tmp / "other", c.tmp / "w-other"
    shutil.copytree(UPGRADED, c.data)
    c.command = ["run", "--resume"]


def concurrent_runs(c: Ctx):
    _copy_small(c)
    first = _start_run(c, batches=3)
    first.send_signal(signal.SIGSTOP)  # holds the lock, changes nothing while the second one tries

    def finish():
        first.send_signal(signal.SIGCONT)
        assert first.wait(300) == 0  # the first run was never disturbed
    c.after = finish


def plain_run_after_interruption(c: Ctx):
    _interrupted(c)


@dataclass(frozen=True)
class Case:
    setup: Callable
    code: int
    what: str  # in the ERROR line (for warnings: in the plan's output)
    todo: str  # in the HINT (what to do)


CASES = {
    "no-data-dir": Case(no_data_dir, 2, "the data directory", "DATA_DIR"),
    "data-dir-not-set": Case(no_data_dir_set, 2, "no HridaAI data directory given", "set DATA_DIR"),
    "missing-hridaai-db": Case(missing_db, 2, "no hridaai.db in", "holds hridaai.db"),
    "not-sqlite": Case(not_sqlite, 4, "not a plain SQLite file", "restored from a backup"),
    "truncated-sqlite": Case(truncated, 4, "not a readable SQLite database", "not damaged"),
    "corrupt-sqlite": Case(corrupt, 4, "fails SQLite's integrity check", "sqlite3 .recover"),
    "wal-without-db": Case(wal_without_db, 2, "a WAL file without its database", "holds hridaai.db"),
    "empty-database": Case(empty_db, 4, "source-empty: the source database is empty", "DATA_DIR"),
    "other-application": Case(other_app, 4, "not a HridaAI database", "DATA_DIR"),
    "no-vector-store": Case(no_vector_store, 0, "[WARNING] no-vector-store", "CHROMA_DATA_PATH"),
    "vector-db-without-chroma-sqlite3": Case(no_chroma_sqlite, 4, "has no chroma.sqlite3", "restore vector_db/"),
    "corrupt-chroma-sqlite3": Case(corrupt_chroma_sqlite, 4, "chroma.sqlite3 is damaged", "restore vector_db/"),
    "missing-segment-files": Case(missing_segments, 4, "vector-source: the Chroma store cannot be read",
                                  "segment files are missing"),
    "chroma-newer-than-installed": Case(newer_chroma, 4, "written by a newer chromadb", "install the chromadb"),
    "sqlcipher-wrong-key": Case(sqlcipher_wrong_key, 4, "cannot decrypt hridaai.db", "DATABASE_PASSWORD"),
    "unreachable-target": Case(unreachable, 75, "cannot reach the target PostgreSQL server", "check host, port"),
    "wrong-password": Case(wrong_password, 4, "the target refused the credentials", "user and password"),
    "database-does-not-exist": Case(no_database, 4, "the target database does not exist", "CREATE DATABASE"),
    "no-create-privilege": Case(no_create_privilege, 4, "no-create-privilege", "GRANT CREATE ON DATABASE"),
    "pgvector-not-creatable": Case(no_pgvector_right, 4, "pgvector-not-installed", "CREATE EXTENSION vector"),
    "target-holds-data": Case(holds_data, 4, "target-holds-data", "--force-clear"),
    "target-other-revision": Case(other_revision, 4, "revision-mismatch", "use an empty database"),
    "document-chunk-other-dimension": Case(chunk_other_dimension, 4, "document-chunk-differs",
                                           "PGVECTOR_INITIALIZE_MAX_VECTOR_LENGTH"),
    "vectors-longer-than-configured": Case(vectors_too_long, 4, "vector-too-long",
                                           "PGVECTOR_INITIALIZE_MAX_VECTOR_LENGTH to at least 384"),
    "chunk-id-collisions": Case(chunk_id_collisions, 0, "[WARNING] chunk-id-collision", "quarantine"),
    "resume-other-snapshot": Case(other_snapshot, 4, "made from another snapshot", "resume with the snapshot"),
    "two-runs-at-once": Case(concurrent_runs, 4, "another `migrate run` is already working", "wait for it"),
    "plain-run-after-interruption": Case(plain_run_after_interruption, 4, "an unfinished run", "--resume"),
}


def target_state(url: str) -> list | None:
    """Every table outside the system schemas with its row count (the ledger included); None: unreachable."""
    async def go():
        import asyncpg

        try:
            conn = await asyncpg.connect(url, timeout=10)
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
            return None
        try:
            tables = await conn.fetch("SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN "
                                      "('pg_catalog', 'information_schema') ORDER BY 1, 2")
            return [(s, t, await conn.fetchval(f'SELECT count(*) FROM "{s}"."{t}"')) for s, t in tables]
        finally:
            await conn.close()

    return asyncio.run(go())


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, target_url, pg_admin_url, tmp_path):
    case = CASES[name]
    c = Ctx(tmp_path, target_url, pg_admin_url, tmp_path / "data")
    case.setup(c)
    source = tree_digest(c.data) if c.data.exists() else None
    before = target_state(target_url)
    proc = run_cli(*c.args(), env=c.env or None, timeout=300)
    if c.after:
        c.after()
    out = proc.stdout + proc.stderr
    assert proc.returncode == case.code, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    if case.code:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
        assert len(errors) == 1, proc.stderr
        assert case.what in proc.stderr, proc.stderr
        hint = next(line for line in proc.stderr.splitlines() if line.startswith("HINT:"))
        assert case.todo in hint, proc.stderr
    else:
        assert case.what in proc.stdout and case.todo in proc.stdout, proc.stdout[-3000:]
    assert (tree_digest(c.data) if c.data.exists() else None) == source  # the source, byte for byte
    if not c.after:  # a concurrent run was let go on: it changes the target, legitimately
        assert target_state(target_url) == before  # refused or read-only: the target is exactly as it was


def test_server_older_than_supported_is_refused():
    """No PostgreSQL 12 server here: the check function is given the state a 12.x server reports."""
    from migrator import settings as settings_mod
    from migrator.plan import checks
    from migrator.plan.model import Plan
    from migrator.targets.postgres import TargetState

    state = TargetState(server_version=120017, server_version_text="12.17", schema="public")
    plan = Plan(snapshot_id="s", source_revision="0bd252b206fb", known_revisions=[], mode="create", target="t",
                target_state="empty", schema="public", policies={}, orphans="quarantine")
    found = checks.target_checks(state, plan, settings_mod.build({"policies": {}}))
    check = next(c for c in found if c.code == "server-too-old")
    assert check.severity == "error" and "12.17" in check.message and "13 or newer" in check.hint
    assert not [c for c in checks.target_checks(TargetState(160004, "16.4", "public"), plan,
                                                settings_mod.build({"policies": {}})) if c.code == "server-too-old"]


def _unreadable_case(tmp_path: Path, target_url: str, path_of, command: str):
    data = tmp_path / "data"
    _copy_small(Ctx(tmp_path, target_url, "", data))
    blocked = path_of(data)
    mode = blocked.stat().st_mode
    before = target_state(target_url)
    blocked.chmod(0)
    try:
        proc = run_cli(command, "--data-dir", str(data), "--work-dir", str(tmp_path / "w"), "--target", target_url,
                       "--log-format", "none", prefix=conftest.unprivileged())
    finally:
        blocked.chmod(mode)
    assert target_state(target_url) == before
    return blocked, proc


@pytest.mark.parametrize("which", ["hridaai.db", "chroma-segment-file"])
def test_unreadable_source_is_an_operator_error_naming_file_uid_and_fix(which, target_url, tmp_path):
    pick = {"hridaai.db": lambda d: d / "hridaai.db",
            "chroma-segment-file": lambda d: sorted((d / "vector_db").rglob("data_level0.bin"))[0]}[which]
    blocked, proc = _unreadable_case(tmp_path, target_url, pick, "run")
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr and "bug" not in proc.stderr, proc.stderr
    assert f"ERROR: cannot read the source: permission denied on {blocked}" in proc.stderr, proc.stderr
    assert f"runs as uid {os.geteuid()}" in proc.stderr and "mode 0000" in proc.stderr, proc.stderr
    hint = next(line for line in proc.stderr.splitlines() if line.startswith("HINT:"))
    assert "runAsUser" in hint and "fsGroup" in hint and "chmod" in hint, hint


def test_unsearchable_data_dir_config_only_looks_snapshot_names_the_directory(target_url, tmp_path):
    _, config = _unreadable_case(tmp_path, target_url, lambda d: d, "config")
    assert config.returncode == 0, config.stderr
    assert "cannot be looked into as uid" in config.stdout, config.stdout
    (tmp_path / "again").mkdir()
    blocked, snap = _unreadable_case(tmp_path / "again", target_url, lambda d: d, "snapshot")
    assert snap.returncode == 4, snap.stderr
    assert f"permission denied on {blocked}" in snap.stderr and "runAsUser" in snap.stderr, snap.stderr
