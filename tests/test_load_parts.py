"""Big tables load in parts (rowid ranges, one ledger unit each) over several connections: nothing lost or doubled,
resumable after SIGKILL, verified per table."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import time

import pytest
from test_resume import _no_duplicates, _start

from conftest import MIGRATE, ROOT, SMALL, query, run_cli
from migrator.load import split as load_parts
from migrator.plan.model import TablePlan

EXTRA = 110_000  # > 2 x PART_ROWS: `message` loads in 2 parts


def _plan(**kw) -> TablePlan:
    return TablePlan(name="t", action="load", **kw)


def test_part_count_follows_rows_and_bytes_only():
    assert load_parts.count(_plan(rows=10, bytes=100)) == 1
    assert load_parts.count(_plan(rows=3 * load_parts.PART_ROWS, bytes=0)) == 3
    assert load_parts.count(_plan(rows=10, bytes=5 * load_parts.PART_BYTES)) == 5
    assert load_parts.count(_plan(rows=10 ** 9, bytes=0)) == load_parts.MAX_PARTS
    assert load_parts.count(_plan(rows=3, bytes=10 ** 12)) == 3  # never more parts than rows
    assert load_parts.count(_plan(rows=10 ** 6, bytes=0, self_ref={"column": "p", "ref_column": "id"})) == 1
    assert load_parts.count(TablePlan(name="t", action="quarantine", rows=10 ** 6)) == 1


@pytest.mark.parametrize("rowid", [lambda i: i * 7 - 500, lambda i: i + 3], ids=["gaps", "dense"])
def test_parts_cover_every_rowid_once_in_order(tmp_path, rowid):
    db = tmp_path / "x.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.executemany("INSERT INTO t (rowid, v) VALUES (?, 'x')", [(rowid(i),) for i in range(175_003)])
    conn.commit()
    rowids = [r[0] for r in conn.execute("SELECT rowid FROM t ORDER BY rowid")]
    conn.close()
    parts = load_parts.split_all(db, [_plan(rows=len(rowids), bytes=0)])["t"]
    assert [p.unit for p in parts] == ["t", "t#2", "t#3"]
    assert parts[0].after == load_parts.FIRST and parts[-1].until == load_parts.LAST
    assert all(a.until == b.after for a, b in zip(parts, parts[1:]))
    got = [[r for r in rowids if p.after < r <= p.until] for p in parts]
    assert sum(got, []) == rowids and [len(g) for g in got] == [p.rows for p in parts]
    assert max(p.rows for p in parts) - min(p.rows for p in parts) <= 1


def _big_data_dir(tmp_path):
    dest = tmp_path / "data"
    dest.mkdir()
    shutil.copy(SMALL / "hridaai.db", dest / "hridaai.db")
    conn = sqlite3.connect(dest / "hridaai.db")
    channel = conn.execute("SELECT id FROM channel ORDER BY id LIMIT 1").fetchone()[0]
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO message (id, user_id, channel_id, content, data, meta, created_at, updated_at, is_pinned) "
        "SELECT 'm-' || i, 'u-' || (i % 17), ?, 'line ' || i || ' \t\\ \"q\" ' || char(10) || 'ü', "
        "'{\"n\": ' || i || '}', NULL, 1700000000000000000 + i, 1700000000000000000 + i, i % 2 FROM n",
        (EXTRA, channel))
    conn.commit()
    conn.close()
    return dest


def _units(url: str) -> dict[str, list[int]]:
    by_unit: dict[str, list[int]] = {}
    for unit, n in query(url, "SELECT unit, batch_no FROM hridaai_migrate.batch ORDER BY unit, batch_no"):
        by_unit.setdefault(unit, []).append(n)
    return by_unit


def test_table_in_parts_survives_sigkill_and_verifies(target_url, tmp_path):
    data = _big_data_dir(tmp_path)
    common = ["--data-dir", str(data), "--work-dir", str(tmp_path / "w"), "--target", target_url,
              "--log-format", "none", "--batch-rows", "4000", "--jobs", "2"]
    proc = _start(["run", *common])
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        try:
            started = query(target_url, "SELECT count(DISTINCT unit) FROM hridaai_migrate.batch "
                                        "WHERE unit IN ('message', 'message#2')")[0][0]
        except Exception:  # ledger not there yet
            started = 0
        if started == 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before both parts of `message` were loading"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the load workers (processes) die with the run: their sessions end and nothing more is committed
    deadline = time.time() + 10
    while query(target_url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hridaai-migrate'"
                )[0][0] and time.time() < deadline:
        time.sleep(0.1)
    assert query(target_url, "SELECT count(*) FROM pg_stat_activity "
                             "WHERE application_name = 'hridaai-migrate'")[0][0] == 0
    partial = query(target_url, "SELECT count(*) FROM public.message")[0][0]
    time.sleep(1)
    assert query(target_url, "SELECT count(*) FROM public.message")[0][0] == partial
    assert 0 < partial < EXTRA

    done = run_cli("run", "--resume", *common)
    assert done.returncode == 0, done.stderr
    verify = run_cli("verify", *common)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert query(target_url, "SELECT count(*), count(DISTINCT id) FROM public.message")[0] == (EXTRA + 40, EXTRA + 40)
    _no_duplicates(target_url)
    units = _units(target_url)
    assert {"message", "message#2"} <= set(units)
    assert all(ns == list(range(1, len(ns) + 1)) for ns in units.values())  # no gap, no repeat per unit
    assert query(target_url, "SELECT sum(total_rows) FROM hridaai_migrate.unit "
                             "WHERE split_part(unit, '#', 1) = 'message'")[0][0] == EXTRA + 40


def test_part_count_uses_sampled_bytes_when_payload_is_unmeasured(tmp_path):
    db = tmp_path / "x.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [("x" * 100_000,) for _ in range(700)])  # ~70 MB
    conn.commit()
    conn.close()
    parts = load_parts.split_all(db, [_plan(rows=700, bytes=0)])["t"]  # bytes=0: as `run` plans
    assert len(parts) == 2 and sum(p.rows for p in parts) == 700
    assert load_parts.sampled_bytes(sqlite3.connect(db), _plan(rows=700, bytes=0)) == 70_000_000


def test_run_waits_for_writers_of_a_killed_run(target_url, tmp_path):
    """A session still holding the load workers' lock (a worker of an earlier run the server has not yet seen go)
    keeps a new run from reading the ledger: refused with what to do, nothing written."""
    import asyncio

    import asyncpg

    from migrator import ledger

    async def scenario():
        holder = await asyncpg.connect(target_url)
        try:
            await ledger.hold_writer(holder)
            proc = await asyncio.create_subprocess_exec(
                *MIGRATE, "run", "--data-dir", str(SMALL), "--work-dir", str(tmp_path / "w"), "--target", target_url,
                "--log-format", "none", stderr=asyncio.subprocess.PIPE, cwd=ROOT,
                env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"})
            _, err = await proc.communicate()
            return proc.returncode, err.decode()
        finally:
            await holder.close()

    code, err = asyncio.run(scenario())
    assert code == 4, err
    assert "load workers of an earlier run are still connected" in err and "pg_terminate_backend" in err
    assert query(target_url, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")[0][0] == 0
    done = run_cli("run", "--data-dir", str(SMALL), "--work-dir", str(tmp_path / "w"), "--target", target_url,
                   "--log-format", "none")
    assert done.returncode == 0, done.stderr


def test_errors_cross_from_a_load_worker_whole():
    """A worker's error reaches the main process (pickled) with its message, detail, hint and exit code."""
    import pickle

    from migrator.errors import PreflightError, TransientError

    for exc in (PreflightError("m", detail="d", hint="h"), TransientError("lost", hint="resume")):
        back = pickle.loads(pickle.dumps(exc))
        assert (type(back), back.render(), back.exit_code) == (type(exc), exc.render(), exc.exit_code)


def _tagged(tag: str) -> dict[int, str]:
    """pid -> command line of every process whose environment carries HM_TEST_TAG=<tag> (a run and its children)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                if f"HM_TEST_TAG={tag}".encode() not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                out[int(entry.name)] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return out


def _gone(tag: str, timeout: float = 30) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while (left := _tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.mark.parametrize("ending", ["killed during the snapshot", "refused by the snapshot",
                                    "refused after the hand-over"])
def test_load_workers_started_before_the_snapshot_end_with_the_run(target_url, tmp_path, ending):
    """`run` starts its load workers before the snapshot (their start-up beside its I/O); a run that ends before
    handing them the plan (SIGKILL, or a source the snapshot refuses), or right after (a plan with an error-level
    check: the workers are killed before they have read it), ends at once and leaves no process behind."""
    import uuid

    data = tmp_path / "data"
    shutil.copytree(SMALL, data)
    tag = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(HM_TEST_TAG=tag, HRIDAAI_MIGRATE_STOP_AT="plan")  # stops right after the snapshot
    if ending == "refused by the snapshot":
        (data / "hridaai.db").write_bytes(b"this is not an SQLite database\n" * 200)
    if ending == "refused after the hand-over":  # an error-level check of the plan: `begin` refuses the run
        env.pop("HRIDAAI_MIGRATE_STOP_AT")
        db = sqlite3.connect(data / "vector_db" / "chroma.sqlite3")  # written by a newer chromadb than ours
        with db:
            db.execute("INSERT INTO migrations SELECT dir, version + 1, 'future.sql', sql, hash FROM migrations "
                       "WHERE dir = 'sysdb' ORDER BY version DESC LIMIT 1")
        db.close()
    import subprocess

    from conftest import stopped_at_failpoint

    proc = subprocess.Popen([*MIGRATE, "run", "--data-dir", str(data), "--work-dir", str(tmp_path / "w"), "--target",
                             target_url, "--jobs", "2", "--log-format", "json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        if ending == "killed during the snapshot":
            assert stopped_at_failpoint(proc), proc.communicate()
            workers = [c for pid, c in _tagged(tag).items() if pid != proc.pid and "spawn_main" in c]
            assert len(workers) == 2, _tagged(tag)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        else:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 4, err
            want = ("hridaai.db is not a plain SQLite file" if ending == "refused by the snapshot" else
                    "error-level checks")
            assert want in err.decode() and "Traceback" not in err.decode(), err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _gone(tag) == {}
    assert query(target_url, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")[0][0] == 0
