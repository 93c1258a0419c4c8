"""Fast checks of the harness itself: ``pytest bench`` (no PostgreSQL needed)."""
from __future__ import annotations

import json
import sqlite3

from bench import generate, pgutil, report
from bench.generate import GenParams
from bench.migrate_runner import table_windows


def _build(tmp_path, name, **kw):
    params = GenParams(chats=60, narrow=500, users=20, **kw)
    return generate.build(params, tmp_path / name)


def test_generation_is_deterministic_and_consistent(tmp_path):
    a, b = _build(tmp_path, "a"), _build(tmp_path, "b")
    assert a["tables"] == b["tables"]
    assert (tmp_path / "a/hridaai.db").read_bytes() == (tmp_path / "b/hridaai.db").read_bytes()
    con = sqlite3.connect(tmp_path / "a/hridaai.db")
    assert con.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0] == 48
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [("0bd252b206fb",)]
    for cid, doc, current in con.execute("SELECT id, chat, current_message_id FROM chat"):
        tree = json.loads(doc)
        assert tree["history"]["currentId"] == current
        ids = {r[0] for r in con.execute("SELECT id FROM chat_message WHERE chat_id = ?", (cid,))}
        assert ids == {f"{cid}-{mid}" for mid in tree["history"]["messages"]}
    assert con.execute("SELECT count(*) FROM message").fetchone()[0] == 500
    assert con.execute("SELECT min(created_at) FROM message").fetchone()[0] > 10**18  # ns


def test_seed_changes_data(tmp_path):
    a, b = _build(tmp_path, "a"), _build(tmp_path, "b", seed=2)
    assert a["tables"]["chat"]["bytes"] != b["tables"]["chat"]["bytes"]


def test_with_database():
    uri = "postgresql://postgres:@/postgres?host=/tmp/x"
    assert pgutil.with_database(uri, "bench_1") == "postgresql://postgres:@/bench_1?host=/tmp/x"
    assert pgutil.mask("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"


def test_table_windows():
    samples = [(0.0, {}), (1.0, {"chat": 0}), (2.0, {"chat": 100}), (3.0, {"chat": 200}), (4.0, {"chat": 200})]
    w = table_windows(samples, 0.0)["chat"]
    assert (w["start_s"], w["end_s"], w["window_s"]) == (1.0, 3.0, 2.0)


def test_summary_without_migrate():
    stats = {t: {"rows": 10, "bytes": 1000} for t in ("user", *pgutil.BENCH_TABLES)}
    base = {t: {k: {"rows_per_s": 5.0, "mb_per_s": 0.1, "scaled": False} for k in ("ceiling", "naive", "row_by_row")}
            for t in pgutil.BENCH_TABLES}
    text = report.render(report.summarize(stats, base, []), "hdr")
    assert "chat_message" in text and "TOTAL*" in text


def test_event_windows(tmp_path):
    from bench.migrate_runner import event_windows
    log = tmp_path / "err"
    log.write_text('noise\n{"ts": 10.0, "stage": "load", "unit": "chat", "state": "start"}\n'
                   '{"ts": 11.0, "stage": "load", "unit": "chat", "batch": 1, "rows": 5}\n'
                   '{"ts": 12.5, "stage": "load", "unit": "chat", "state": "done", "rows": 5}\n')
    assert event_windows(str(log), str(tmp_path / "missing")) == {"chat": {"window_s": 2.5}}


def test_cpu_summary_splits_client_and_server_and_bounds_the_ratio():
    stats = {t: {"rows": 100, "bytes": 1000} for t in pgutil.BENCH_TABLES}
    base = {t: {"ceiling": {"rows_per_s": 20.0, "mb_per_s": 0.2, "seconds": 5.0, "busy_core_s": 9.0,
                            "client_core_s": 1.0},
                "naive": {"rows_per_s": 10.0, "mb_per_s": 0.1, "scaled": False},
                "row_by_row": {"rows_per_s": 2.0, "mb_per_s": 0.02}} for t in pgutil.BENCH_TABLES}
    run = {"ok": True, "seconds": 30.0, "busy_core_s": 56.0, "tool_core_s": 20.0, "tables": {}, "phases": {},
           "peak_rss_mb": 100.0}
    s = report.summarize(stats, base, [{"run": run}], cores=2)
    c = s["cpu"]
    assert (c["ceiling_s"], c["ceiling_busy_core_s"], c["ceiling_server_core_s"]) == (15.0, 27.0, 24.0)
    assert (c["migrate_server_core_s"], c["migrate_server_bound_s"]) == (36.0, 18.0)
    assert c["best_vs_ceiling_without_client"] == 15.0 / 18.0
    chat = s["tables"][0]
    assert (chat["ceiling_vs_naive"], chat["ceiling_vs_row_by_row"]) == (2.0, 10.0)
    text = report.render(s, "hdr")
    assert "server 36.0" in text and "at most 0.83x" in text and "ceil/rbr" in text


def test_busy_core_seconds_advance_with_work():
    from bench import cpu

    before = cpu.busy_core_s()
    if before is None:  # not Linux: the figure is reported as unknown, never made up
        assert cpu.delta(before, 1.0) is None
        return
    t = cpu.own_core_s()
    while cpu.own_core_s() - t < 0.3:
        pass
    assert cpu.delta(before, cpu.busy_core_s()) >= 0.2
