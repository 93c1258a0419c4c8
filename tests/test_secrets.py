"""No password in any output: every command, run as a least-privilege role whose password is in the URL.

The role gets only what deploy/RUNBOOK.md tells a DBA to grant (CONNECT + CREATE on the database, CREATE on schema
public, the vector extension created beforehand), so this is also the least-privilege test. The test server trusts
local connections, so the password is never checked, but it travels everywhere a real one would. Independent of
conftest's run_cli check: the processes are started here and every byte they leave behind is searched.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from urllib.parse import quote, urlsplit

import asyncpg
import pytest

from conftest import ROOT, SMALL
from migrator.errors import EXIT_PREFLIGHT, EXIT_TRANSIENT

PASSWORD = "s3cret-pw-" + uuid.uuid4().hex[:8]
KEY = "crypt0-key-" + uuid.uuid4().hex[:8]
TOKEN = "t0ken-" + uuid.uuid4().hex[:8]


def _admin(url: str, *statements: str) -> None:
    async def go():
        conn = await asyncpg.connect(url)
        try:
            for sql in statements:
                await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


@pytest.fixture
def role_url(pg_admin_url, target_url):
    """target_url's database, reached as a new non-superuser role with a password (and only the runbook's grants)."""
    if urlsplit(pg_admin_url).password:
        pytest.skip("needs a trust-auth test server (the role's password is made up)")
    role, db = "hm_" + uuid.uuid4().hex[:8], urlsplit(target_url).path.lstrip("/")
    _admin(pg_admin_url, f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'",
           f'GRANT CONNECT, CREATE ON DATABASE "{db}" TO {role}')
    _admin(target_url, "CREATE EXTENSION IF NOT EXISTS vector", f"GRANT CREATE ON SCHEMA public TO {role}")
    rest = target_url.split("://", 1)[1].rsplit("@", 1)[1]
    yield f"postgresql://{role}:{quote(PASSWORD, safe='')}@{rest}", role
    try:
        _admin(target_url, f"DROP OWNED BY {role}")
        _admin(pg_admin_url, f"DROP ROLE IF EXISTS {role}")
    except asyncpg.PostgresError:
        pass  # the database is dropped WITH (FORCE) by target_url's teardown


def _migrate(args: list[str], env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "PGVECTOR_", "CHROMA_"))}
    return subprocess.run([sys.executable, "-m", "migrator", *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**clean, **env})


def _leaks(text: str) -> list[str]:
    return [s for s in (PASSWORD, KEY, TOKEN) if s in text]


def test_no_secret_in_any_output_file_or_ledger_row(role_url, tmp_path):
    url, role = role_url
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "DATABASE_URL").write_text(url + "\n")  # as the Job mounts HridaAI's Secret
    env = {"HRIDAAI_MIGRATE_SECRETS_DIR": str(secrets), "PGVECTOR_PGCRYPTO_KEY": KEY,
           "CHROMA_HTTP_HEADERS": f"Authorization=Bearer {TOKEN}"}
    common = ["--data-dir", str(SMALL), "--work-dir", str(tmp_path / "work")]
    runs = {
        "config": (_migrate(["config", *common], env), 0),
        "config --json": (_migrate(["config", "--json", *common], env), 0),
        "plan": (_migrate(["plan", "--json", *common], env), 0),
        "run": (_migrate(["run", "--log-format", "json", *common], env), 0),
        "status": (_migrate(["status", "--json", *common], env), 0),
        "verify": (_migrate(["verify", "--json", *common], env), 0),
        "run again (refused)": (_migrate(["run", *common], env), EXIT_PREFLIGHT),
        "wrong database": (_migrate(["status", *common, "--target", url.replace(urlsplit(url).path, "/nodb")], {}),
                           EXIT_PREFLIGHT),
        "unreachable": (_migrate(["status", *common, "--target", f"postgresql://{role}:{PASSWORD}@127.0.0.1:9/d"],
                                 {}), EXIT_TRANSIENT),
    }
    for name, (proc, code) in runs.items():
        assert proc.returncode == code, f"{name}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        assert not _leaks(proc.stdout + proc.stderr), f"{name} printed a secret"
    assert json.loads(runs["verify"][0].stdout)["ok"] is True
    assert f"{role}:****@" in runs["config"][0].stdout and "Authorization=****" in runs["config"][0].stdout
    files = [p for p in (tmp_path / "work").rglob("*") if p.is_file()]
    assert any(p.name == "plan.json" for p in files) and any(p.name == "verify.json" for p in files)
    for p in files:
        assert not _leaks(p.read_bytes().decode("latin-1")), f"{p} holds a secret"
    assert not _leaks(_ledger_text(url))


def _ledger_text(url: str) -> str:
    """Every row of every table in the tool's own schema, as text."""

    async def go():
        conn = await asyncpg.connect(url)
        try:
            tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'hridaai_migrate'")
            assert tables
            rows = []
            for t in tables:
                rows += await conn.fetch(f'SELECT t::text AS r FROM hridaai_migrate."{t["tablename"]}" t')
            return "\n".join(r["r"] for r in rows)
        finally:
            await conn.close()

    return asyncio.run(go())


def test_the_job_takes_credentials_from_hridaais_secret_only():
    """No URL or password as an argument (`ps` shows those) or written into the manifest: envFrom the Secret."""
    import yaml

    spec = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "job.yaml").read_text())["spec"]["template"]["spec"]
    for c in spec["initContainers"] + spec["containers"]:
        assert not any(a.startswith("--target") or "://" in a for a in c["args"]), c["name"]
        assert not {e["name"] for e in c["env"]} & {"DATABASE_URL", "DATABASE_PASSWORD", "PGVECTOR_DB_URL"}
        assert {"secretRef": {"name": "hridaai-secrets"}} in c["envFrom"]
