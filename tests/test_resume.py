"""Crash safety: SIGKILL mid-run, backend terminated mid-batch, plain run over an unfinished ledger."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import asyncpg

from conftest import MIGRATE, ROOT, SMALL, query, run_cli


def _start(args) -> subprocess.Popen:
    return subprocess.Popen(MIGRATE + args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _batches(url: str) -> int:
    try:
        return query(url, "SELECT count(*) FROM hridaai_migrate.batch")[0][0]
    except Exception:  # ledger not created yet
        return 0


def _no_duplicates(url: str) -> None:
    for (table,) in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"):
        pk = query(url, "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND "
                        "a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::regclass AND i.indisprimary",
                   f'public."{table}"')
        assert pk, table  # every table has a primary key: duplicates are impossible, not merely absent


def test_sigkill_at_several_points_then_resume(target_url, tmp_path):
    work = tmp_path / "w"
    common = ["--data-dir", str(SMALL), "--work-dir", str(work), "--target", target_url, "--log-format", "none",
              "--batch-rows", "7"]
    assert run_cli("snapshot", *common).returncode == 0
    kills = 0
    for wanted in (3, 25, 60):
        proc = _start(["run", "--resume", *common])
        deadline = time.time() + 60
        while _batches(target_url) < wanted and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2
    done = run_cli("run", "--resume", *common)
    assert done.returncode == 0, done.stderr
    verify = run_cli("verify", *common)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    _no_duplicates(target_url)
    seq = query(target_url, "SELECT unit, batch_no FROM hridaai_migrate.batch ORDER BY unit, batch_no")
    by_unit: dict = {}
    for unit, n in seq:
        by_unit.setdefault(unit, []).append(n)
    assert all(ns == list(range(1, len(ns) + 1)) for ns in by_unit.values())  # no gap, no repeat


def test_plain_run_over_unfinished_ledger_refuses(target_url, tmp_path):
    work = tmp_path / "w"
    common = ["--data-dir", str(SMALL), "--work-dir", str(work), "--target", target_url, "--log-format", "none",
              "--batch-rows", "5"]
    proc = _start(["run", *common])
    while _batches(target_url) < 5 and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    again = run_cli("run", *common)
    assert again.returncode == 4
    assert "--resume" in again.stderr
    assert run_cli("run", "--resume", *common).returncode == 0
    assert run_cli("verify", *common).returncode == 0


def test_backend_terminated_mid_load_exits_75_then_resumes(target_url, tmp_path):
    work = tmp_path / "w"
    common = ["--data-dir", str(SMALL), "--work-dir", str(work), "--target", target_url, "--log-format", "none",
              "--batch-rows", "3"]
    proc = _start(["run", *common])

    async def kill_backend():
        conn = await asyncpg.connect(target_url)
        try:
            for _ in range(3000):
                n = await conn.fetchval("SELECT count(*) FROM hridaai_migrate.batch") if await conn.fetchval(
                    "SELECT to_regclass('hridaai_migrate.batch') IS NOT NULL") else 0
                if n >= 10:
                    return await conn.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'hridaai-migrate' AND pid <> pg_backend_pid()")
                await asyncio.sleep(0.005)
        finally:
            await conn.close()

    killed = asyncio.run(kill_backend())
    out, err = proc.communicate(timeout=120)
    assert killed and proc.returncode == 75, err
    assert "--resume" in err
    assert run_cli("run", "--resume", *common).returncode == 0
    verify = run_cli("verify", *common)
    assert verify.returncode == 0, verify.stdout


def test_sigterm_drains_current_batch_and_exits_75(target_url, tmp_path):
    work = tmp_path / "w"
    common = ["--data-dir", str(SMALL), "--work-dir", str(work), "--target", target_url, "--log-format", "json",
              "--batch-rows", "3"]
    proc = _start(["run", *common])
    while _batches(target_url) < 5 and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert run_cli("run", "--resume", *common).returncode == 0
    assert run_cli("verify", *common).returncode == 0


def test_resume_against_a_different_snapshot_refuses(target_url, tmp_path):
    from conftest import UPGRADED

    common = ["--target", target_url, "--log-format", "none"]
    assert run_cli("run", "--data-dir", str(SMALL), "--work-dir", str(tmp_path / "a"), *common).returncode == 0
    other = run_cli("run", "--resume", "--data-dir", str(UPGRADED), "--work-dir", str(tmp_path / "b"), *common)
    assert other.returncode == 4
    assert "another snapshot" in other.stderr
    assert sys.executable
