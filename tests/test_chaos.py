"""Chaos: SIGKILL at random moments of `migrate run` (CHAOS_TRIALS, default 10), a server restart mid-run, a backend
terminated mid-COPY of the vectors, and a full work directory. Every fault ends in a verified, complete migration.

The larger local run is `python -m bench.chaos --trials 50` (same code).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import conftest
from bench import chaos, pgserver_ctl
from conftest import MIGRATE, ROOT, SMALL, query, run_cli, stopped_at_failpoint, with_password
from migrator.failpoints import ENV as FAILPOINT

pytestmark = pytest.mark.chaos


def _args(work: Path, url: str, *, batch_rows: int = 3, data: Path = SMALL) -> list[str]:
    return ["--data-dir", str(data), "--work-dir", str(work), "--target", url, "--log-format", "none",
            "--batch-rows", str(batch_rows)]


def _batches(url: str, like: str = "%") -> int:
    try:
        return query(url, "SELECT count(*) FROM hridaai_migrate.batch WHERE unit LIKE $1", like)[0][0]
    except Exception:  # no ledger yet, or the server is down
        return 0


def test_sigkill_at_random_moments_then_resume_and_verify(pg_admin_url, tmp_path, capsys):
    trials = int(os.environ.get("CHAOS_TRIALS", "10"))
    seed = int(os.environ.get("CHAOS_SEED", "20260"))
    s = chaos.run_trials(trials, seed=seed, admin_url=with_password(pg_admin_url, conftest.SUITE_PASSWORD),
                         base=tmp_path, secrets=set(conftest.SECRETS), jobs=2)
    with capsys.disabled():
        print("\n" + chaos.format_summary(s))
    assert s["trials"] == max(trials, len(chaos.REQUIRED))
    # every required point (snapshot, schema, COPY, vectors, index, stamping) is hit by a run paused there itself
    assert not s["paused_missed"] and not s["required_missing"], chaos.format_summary(s)
    assert s["killed"] >= len(chaos.REQUIRED)
    assert s["ok"] == s["trials"] and s["verify_passed"] == s["trials"], chaos.format_summary(s)


def test_stage_names_of_progress_events():
    assert chaos.stage_of({"stage": "load", "unit": "chat"}) == "copy"
    assert chaos.stage_of({"stage": "load", "unit": "vector:file-1"}) == "vectors"
    assert chaos.stage_of({"stage": "finalize", "step": "alembic"}) == "stamp"
    assert chaos.stage_of({"stage": "finalize", "step": "indexes"}) == "index"
    aims = [t.aim for t in chaos.plan_trials(12, 1)]
    assert set(chaos.REQUIRED) <= set(aims[:len(chaos.AIMS)])
    assert [(t.aim, t.paused) for t in chaos.paused_trials()] == [(p, True) for p in chaos.REQUIRED]
    assert [t.delay for t in chaos.plan_trials(5, 3)] == [t.delay for t in chaos.plan_trials(5, 3)]  # seeded


@pytest.fixture
def own_server():
    """A dedicated embedded server (outside pytest's tmp: its user must reach it) that a test may stop and restart."""
    base = Path(tempfile.mkdtemp(prefix="hm-chaos-pg-"))
    pgdata = base / "pg"
    url = pgserver_ctl.start(pgdata)
    yield pgdata, url
    pgserver_ctl.stop(pgdata)
    shutil.rmtree(base, ignore_errors=True)


def test_server_stopped_mid_run_exits_75_and_resume_completes(own_server, tmp_path):
    pgdata, admin = own_server
    query(admin, "CREATE DATABASE chaos_restart")
    url = with_password(conftest._with_db(admin, "chaos_restart"), conftest.SUITE_PASSWORD)
    args = _args(tmp_path / "w", url)
    proc = subprocess.Popen(MIGRATE + ["run", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while _batches(url) < 10 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    pgserver_ctl.stop(pgdata)  # fast shutdown: every session is terminated mid-batch
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    assert "Traceback" not in err and "--resume" in err
    pgserver_ctl.start(pgdata)
    done = run_cli("run", "--resume", *args)
    assert done.returncode == 0, done.stderr[-2000:]
    verify = run_cli("verify", *args)
    assert verify.returncode == 0, verify.stdout[-2000:]


def test_backend_terminated_mid_vector_copy_exits_75_then_resumes(target_url, tmp_path):
    """The table COPY case is tests/test_resume.py::test_backend_terminated_mid_load_exits_75_then_resumes."""
    from test_vectors import data_dir_with

    data = data_dir_with(tmp_path, {f"file-{i}": (1500, 384) for i in range(3)})
    args = _args(tmp_path / "w", target_url, batch_rows=500, data=data)
    # stopped (SIGSTOP) right after a vector batch committed, however fast the machine; its backends terminated
    # meanwhile; then let go: its next statement meets the terminated connection
    proc = subprocess.Popen(MIGRATE + ["run", *args, "--log-format", "json"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, FAILPOINT: "vector-batch"})
    assert stopped_at_failpoint(proc), proc.communicate()[1][-2000:]
    assert _batches(target_url, "vector:%") >= 1
    killed = query(target_url, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE application_name = 'hridaai-migrate' AND pid <> pg_backend_pid()")[0][0]
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=300)
    assert killed and proc.returncode == 75, err[-2000:]
    assert "connection" in err and "Traceback" not in err, err[-2000:]
    assert run_cli("run", "--resume", *args).returncode == 0
    assert tuple(query(target_url, "SELECT count(*), count(DISTINCT id) FROM document_chunk")[0]) == (4500, 4500)
    verify = run_cli("verify", *args)
    assert verify.returncode == 0, verify.stdout[-2000:]


@pytest.fixture
def small_disk(tmp_path):
    """A 20 MB tmpfs as work dir (root can mount one here), else None: the write is then made to fail instead."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m,mode=0700", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        yield None
        return
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _assert_nothing_half_written(work: Path) -> None:
    leftovers = [p.name for p in work.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".snapshot.")]
    assert not leftovers, leftovers
    if (work / "snapshot").exists():  # a snapshot directory exists only complete, with its manifest
        assert (work / "snapshot" / "manifest.json").exists()
    for scratch in ("chroma-read", "chroma-check"):
        assert not (work / scratch).exists() or (work / scratch / ".snapshot-id").exists()


def test_work_dir_full_is_a_clear_error_and_nothing_half_written(small_disk, target_url, tmp_path):
    if small_disk is None:
        return _simulated_enospc(tmp_path)
    work = small_disk / "w"
    args = _args(work, target_url, batch_rows=50)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (12 << 20))  # 8 MB left: less than the 15 MB snapshot
    first = run_cli("run", *args)
    assert first.returncode == 1 and "Traceback" not in first.stderr, first.stderr
    assert "could not write the snapshot: no space left on the device" in first.stderr
    assert "free space" in first.stderr
    _assert_nothing_half_written(work)
    assert not (work / "snapshot").exists()
    filler.unlink()  # 20 MB: the snapshot fits, and `run` needs no second copy of the store (direct reader)
    second = run_cli("run", *args)
    assert second.returncode == 0, second.stderr[-2000:]
    assert not (work / "chroma-read").exists()
    # verify re-reads a sample through chromadb, on a copy of chroma.sqlite3 (8 MB) that no longer fits
    third = run_cli("verify", *args)
    assert third.returncode == 1 and "Traceback" not in third.stderr, third.stderr
    assert "could not write the scratch copy of the Chroma store: no space left" in third.stderr
    _assert_nothing_half_written(work)
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    verify = run_cli("verify", *args)
    assert verify.returncode == 0, verify.stdout[-2000:]
    assert not (work / "chroma-check").exists()


def _simulated_enospc(tmp_path) -> None:
    """No tmpfs here: the snapshot's copy fails with ENOSPC at the write call."""
    import errno
    from unittest import mock

    from migrator import settings as settings_mod, snapshot
    from migrator.errors import WorkDirError
    from migrator.sources import live

    settings = settings_mod.build({"data_dir": str(SMALL), "work_dir": str(tmp_path / "w"), "policies": {}})
    with mock.patch.object(live, "backup", side_effect=OSError(errno.ENOSPC, "No space left on device")):
        with pytest.raises(WorkDirError, match="no space left"):
            snapshot.take(settings)
    _assert_nothing_half_written(tmp_path / "w")
    assert not (tmp_path / "w" / "snapshot").exists()
