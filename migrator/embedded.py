"""The embedded target: a local PostgreSQL + pgvector (pgserver) under the work dir, for trial runs."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from migrator.errors import MigrationError

log = logging.getLogger(__name__)
DIRNAME = "embedded-pg"
DBNAME = "hridaai"


def start(work_dir: Path) -> tuple[str, str]:
    """Start (or reuse) the server; returns (asyncpg URL of database `hridaai`, psql command line)."""
    try:
        with warnings.catch_warnings():  # platformdirs complains about XDG_RUNTIME_DIR on servers
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError as exc:
        raise MigrationError("the embedded target needs the pgserver package",
                             hint="pip install pgserver, or set DATABASE_URL / --target") from exc
    pgdata = (work_dir / DIRNAME).resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(pgdata, cleanup_mode=None)
    if "hridaai" not in server.psql("SELECT datname FROM pg_database;"):
        server.psql(f"CREATE DATABASE {DBNAME};")
    base = server.get_uri(DBNAME)
    psql = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
    pg_ctl = psql.with_name("pg_ctl")
    hint = f'{psql} "{base}"   (stop it with: {pg_ctl} -D {pgdata} stop)'
    return base, hint


def stop(work_dir: Path) -> None:
    """Stop the embedded server if it runs (tests, cleanup)."""
    pgdata = (work_dir / DIRNAME).resolve()
    if not (pgdata / "postmaster.pid").exists():
        return
    import pgserver

    ctl = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"
    user = "pgserver" if os.geteuid() == 0 else None
    cmd = f"{ctl} -D {pgdata} -m fast stop"
    os.system(f"su {user} -s /bin/sh -c '{cmd}' >/dev/null 2>&1" if user else f"{cmd} >/dev/null 2>&1")
