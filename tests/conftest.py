"""Shared fixtures: a real PostgreSQL + pgvector (pgserver, or TEST_DATABASE_URL), real fixture data dirs."""

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


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory) -> str:
    """URL of a maintenance database on a real server (TEST_DATABASE_URL or a pgserver started here)."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server.get_uri("postgres")
    server.cleanup()


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
    yield _with_db(pg_admin_url, name)
    for _ in range(3):  # the server may still be closing a terminated backend
        try:
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            break
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            import time

            time.sleep(1)


def run_cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m migrator ...` as a real process."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("DATABASE_URL", None) if env is None or "DATABASE_URL" not in env else None
    return subprocess.run(MIGRATE + list(args), capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=ROOT)


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
