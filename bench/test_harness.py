"""Self-tests of bench/harness.py, the part both entry points share: ``pytest bench`` (no PostgreSQL needed)."""
from __future__ import annotations

import argparse
import asyncio
import json

from bench import __main__ as bench_main, harness, vectors

COMMON = ["--seed", "2", "--connections", "3", "--verify", "all", "--no-baselines", "--no-migrate",
          "--migrate-cmd", "m --x", "--target", "postgresql://h/postgres", "--keep"]


def test_both_entry_points_take_the_common_options(tmp_path):
    for parse in (bench_main.parse_args, vectors.parse_args):
        a = parse([*COMMON, "--out", str(tmp_path / "r.json")])
        assert (a.seed, a.connections, a.verify, a.no_baselines, a.no_migrate, a.migrate_cmd, a.target, a.keep,
                a.out) == (2, 3, "all", True, True, "m --x", "postgresql://h/postgres", True, tmp_path / "r.json")
    assert bench_main.parse_args([]).out.name == "results.json"
    assert vectors.parse_args([]).out.name == "results-vectors.json"


def _child(ok: bool) -> dict:
    return {"ok": ok, "exit_code": 0 if ok else 1, "seconds": 1.0, "peak_rss_mb": None, "stdout": "/nonexistent",
            "stderr": "/nonexistent"}


def test_migrate_runs_verify_the_first_and_stop_at_a_failure(tmp_path, monkeypatch):
    dropped, lines, outcomes = [], [], iter([True, True, False, True])

    async def recreate(admin_dsn, name):
        return f"postgresql:///{name}"

    async def drop(admin_dsn, name):
        dropped.append(name)

    async def run(cmd, data_dir, work, dsn, logs):
        return _child(next(outcomes))

    async def verify(cmd, data_dir, work, dsn, logs):
        return _child(True)

    async def settle(admin_dsn):
        pass

    monkeypatch.setattr(harness.pgutil, "recreate_database", recreate)
    monkeypatch.setattr(harness.pgutil, "drop_database", drop)
    monkeypatch.setattr(harness.pgutil, "settle", settle)
    plan = harness.Plan(scratch="unused-", databases="bench_t_", runs=4, baselines=None, run=run, verify=verify,
                        run_note=lambda r: "; note")
    session = harness.Session(argparse.Namespace(verify="first", keep=False), lines.append, tmp_path, {}, "admin",
                              tmp_path)
    results = asyncio.run(session.migrate_runs(plan, ["migrate"]))
    assert [r["database"] for r in results] == dropped == ["bench_t_0", "bench_t_1", "bench_t_2"]
    assert ["verify" in r for r in results] == [True, False, False]
    assert "  run: exit 0 in 1.0 s, peak RSS 0 MB; note" in lines
    assert "  verify: exit 0 in 1.0 s, peak RSS 0 MB" in lines
    assert "  migrate run FAILED; its output ends with:\n(no output)" in lines
    assert lines[-1] == "  not repeating a failing migrate run"


def test_finish_writes_the_results_and_sets_the_exit_code(tmp_path):
    args = bench_main.parse_args(["--out", str(tmp_path / "r.json")])
    ok, bad = {"run": {"ok": True}, "verify": {"ok": True}}, {"run": {"ok": True}, "verify": {"ok": False}}
    assert harness.finish(args, lambda _: None, 0.0, {"summary": {}}, {"migrate_runs": [ok]}) == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    assert list(doc) == ["params", "summary", "migrate_runs", "bench_seconds"]
    assert doc["params"]["out"] == str(tmp_path / "r.json")
    assert harness.finish(args, lambda _: None, 0.0, {}, {"migrate_runs": [ok, bad]}) == 1
    assert harness.finish(args, lambda _: None, 0.0, {}, {"migrate_runs": []}) == 1  # no run although asked for
    args.no_migrate = True
    assert harness.finish(args, lambda _: None, 0.0, {}, {"migrate_runs": []}) == 0


def test_after_run_sees_each_successful_run_before_its_database_is_dropped(tmp_path, monkeypatch):
    events = []

    async def recreate(admin_dsn, name):
        return f"postgresql:///{name}"

    async def drop(admin_dsn, name):
        events.append(("drop", name))

    async def child(cmd, data_dir, work, dsn, logs):
        events.append(("child", dsn))
        return _child(True)

    async def after(session, i, dsn, res):
        events.append(("after", i, dsn, "verify" in res))
        return {"ingest_ceiling": {"seconds": 1.0}} if i == 0 else {}

    async def settle(admin_dsn):
        events.append(("settle", admin_dsn))

    monkeypatch.setattr(harness.pgutil, "recreate_database", recreate)
    monkeypatch.setattr(harness.pgutil, "drop_database", drop)
    monkeypatch.setattr(harness.pgutil, "settle", settle)
    plan = harness.Plan(scratch="unused-", databases="bench_t_", runs=2, baselines=None, run=child, verify=child,
                        after_run=after)
    session = harness.Session(argparse.Namespace(verify="first", keep=False), lambda _: None, tmp_path, {}, "admin",
                              tmp_path)
    results = asyncio.run(session.migrate_runs(plan, ["migrate"]))
    assert [("ingest_ceiling" in r) for r in results] == [True, False]
    # each timed run starts after a checkpoint and a sync (not paying for the writes of what ran before it)
    assert events == [("settle", "admin"), ("child", "postgresql:///bench_t_0"), ("child", "postgresql:///bench_t_0"),
                      ("after", 0, "postgresql:///bench_t_0", True), ("drop", "bench_t_0"), ("settle", "admin"),
                      ("child", "postgresql:///bench_t_1"), ("after", 1, "postgresql:///bench_t_1", False),
                      ("drop", "bench_t_1")]


def test_vector_collections_option():
    assert bench_main.parse_args([]).vector_collections == 0 and not bench_main.parse_args([]).ingest_ceiling
    a = bench_main.parse_args(["--vector-collections", "300", "--ingest-ceiling"])
    assert (a.vector_collections, a.ingest_ceiling) == (300, True)
