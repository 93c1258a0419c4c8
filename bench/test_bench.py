"""Fast checks of the harness itself: ``pytest bench`` (no PostgreSQL needed)."""
from __future__ import annotations

import json
import sqlite3

import pytest

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


def test_event_phases_split_the_two_lanes(tmp_path):
    from bench.migrate_runner import event_phases
    log = tmp_path / "err"
    evs = [{"ts": 101.0, "stage": "snapshot", "state": "start"}, {"ts": 102.0, "stage": "plan", "state": "start"},
           {"ts": 104.0, "stage": "schema", "state": "start"},
           {"ts": 104.5, "stage": "load", "unit": "chat", "state": "start"},
           {"ts": 104.6, "stage": "load", "unit": "vector:file-a", "state": "start"},
           {"ts": 105.5, "stage": "load", "unit": "chat", "state": "done", "rows": 3},
           {"ts": 108.0, "stage": "load", "unit": "vector:file-a", "state": "done", "rows": 9},
           {"ts": 106.0, "stage": "finalize", "step": "analyze"},
           {"ts": 110.0, "stage": "finalize", "step": "vector-index"}]
    log.write_text("noise\n" + "".join(json.dumps(e) + "\n" for e in evs))
    p = {k: round(v, 3) for k, v in event_phases(str(log), 100.0, 10.5).items()}
    assert p == {"before_load_s": 4.5, "load_s": 3.5, "finalize_s": 2.0, "after_s": 0.5, "snapshot_s": 1.0,
                 "plan_s": 2.0, "tables_from_s": 0.0, "tables_s": 1.0, "vectors_from_s": 0.1, "vectors_s": 3.4}
    text = report.phases_text(p)
    assert text == ("before load 4.5 s (snapshot 1.0 s, plan 2.0 s), load 3.5 s (tables 1.0 s from +0.0 s, vectors "
                    "3.4 s from +0.1 s), finalize 2.0 s, after 0.5 s")
    # without vectors: the four phases as before
    log.write_text("".join(json.dumps(e) + "\n" for e in evs if "vector" not in str(e.get("unit"))))
    assert set(event_phases(str(log), 100.0, 10.5)) == {"before_load_s", "load_s", "finalize_s", "after_s"}
    assert report.phases_text({"before_load_s": 1.0}) == "before load 1.0 s, load -, finalize -, after -"


def test_ingest_scripts_and_psql_output(tmp_path):
    from bench import ingest
    tables = ["chat", 'we"ird']
    dump = ingest.dump_script(tables, tmp_path)
    assert dump.splitlines() == [f"\\copy public.\"chat\" TO '{tmp_path}/0000.copy'",
                                 f"\\copy public.\"we\"\"ird\" TO '{tmp_path}/0001.copy'"]
    load = ingest.load_script(tables, tmp_path).splitlines()
    assert load[0] == "\\timing on" and load[2] == f"\\copy bench_ingest.\"we\"\"ird\" FROM '{tmp_path}/0001.copy'"
    out = "COPY 12\nTime: 3.500 ms\nCOPY 0\nTime: 1500.250 ms (00:01.500)\n"
    assert ingest.parse_load_output(out, tables) == {"chat": {"rows": 12, "seconds": 0.0035},
                                                      'we"ird': {"rows": 0, "seconds": 1.50025}}
    with pytest.raises(ValueError):
        ingest.parse_load_output("COPY 12\nTime: 3.5 ms\n", tables)


def _run(seconds, **kw):
    return {"ok": True, "seconds": seconds, "peak_rss_mb": 100.0, "tables": {}, "phases": {}, **kw}


def test_install_summary_and_its_lines():
    vec = {"vectors": 900, "load_window_s": 3.0, "vectors_per_s": 300.0, "load_and_indexes_s": 4.0}
    tables = {"document_chunk": {"rows": 900, "seconds": 3.0}, "chat": {"rows": 5, "seconds": 0.5},
              "message": {"rows": 9, "seconds": 0.2}, "user": {"rows": 2, "seconds": 0.01},
              "auth": {"rows": 2, "seconds": 0.02}}
    runs = [{"run": _run(12.0, vectors=vec, rss_by_role={"main": {"count": 1, "max_mb": 99.0, "peaks_mb": [99.0]}}),
             "ingest_ceiling": {"seconds": 4.0, "rows": 918, "bytes": 5e6, "tables": tables}},
            {"run": _run(8.0, vectors=vec)}, {"run": {"ok": False, "seconds": 1.0}}]
    i = report.install_summary([r for r in runs if r["run"]["ok"]])
    assert (i["run_s"], i["run_over_ingest"], i["first_run_over_ingest"], i["vectors"]) == (10.0, 2.5, 3.0, 900)
    assert report.install_summary([{"run": _run(8.0)}]) is None  # tables only, no ingest ceiling: nothing to add
    stats = {t: {"rows": 10, "bytes": 1000} for t in pgutil.BENCH_TABLES}
    base = {t: {k: {"rows_per_s": None, "mb_per_s": None, "scaled": False} for k in ("ceiling", "naive",
                                                                                        "row_by_row")}
            for t in pgutil.BENCH_TABLES}
    text = report.render(report.summarize(stats, base, runs), "hdr")
    assert "into index-free copies of all 5 tables): 4.0 s for 918 rows, 5 MB of text" in text
    assert "document_chunk 3.0 s, chat 0.5 s, message 0.2 s, the other 2 0.0 s" in text
    assert "migrate run, whole wall (median): 10.0 s = 2.50x the ingest ceiling (first run 12.0 s = 3.00x" in text
    assert "vectors: 900 in a load window of 3.0 s (300/s); first vector start -> vector index built 4.0 s" in text
    assert "  peak RSS per process: main 99 MB" in text and "include the vector lane" in text
    failed = report.render_install(report.install_summary([{"run": _run(8.0), "ingest_ceiling": {"error": "no psql"}}]))
    assert "  ingest ceiling: FAILED (no psql)" in failed


def test_with_vector_store_links_both_dirs(tmp_path):
    rel, vec = tmp_path / "rel", tmp_path / "vectors-x"
    (rel / "uploads").mkdir(parents=True)
    (rel / "hridaai.db").write_bytes(b"db")
    (vec / "vector_db" / "seg").mkdir(parents=True)
    (vec / "vector_db" / "chroma.sqlite3").write_bytes(b"chroma")
    (vec / "vector_db" / "seg" / "data_level0.bin").write_bytes(b"hnsw")
    lines = []
    d, m = generate.with_vector_store(rel, {"tables": {}}, vec, {"collections": 3}, cache_dir=tmp_path / "c",
                                      log=lines.append)
    assert d == tmp_path / "c" / "combined-rel-vectors-x" and m == {"tables": {}, "vector_store": {"collections": 3}}
    assert sorted(str(p.relative_to(d)) for p in d.rglob("*")) == [
        "bench-manifest.json", "hridaai.db", "uploads", "vector_db", "vector_db/chroma.sqlite3", "vector_db/seg",
        "vector_db/seg/data_level0.bin"]
    assert (d / "vector_db/seg/data_level0.bin").stat().st_ino == (vec / "vector_db/seg/data_level0.bin").stat().st_ino
    assert (d / "hridaai.db").samefile(rel / "hridaai.db")
    assert generate.with_vector_store(rel, {}, vec, {}, cache_dir=tmp_path / "c", log=lines.append)[0] == d
    assert lines[-1].startswith("dataset + vector store: cached")
