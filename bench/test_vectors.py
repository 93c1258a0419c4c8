"""Self-tests of the vector benchmark's generator and report: ``pytest bench`` (no PostgreSQL needed)."""
from __future__ import annotations

import ast
import json
import sqlite3

import numpy as np
import pytest

from bench import vector_data, vector_report, vectors
from bench.vector_data import VecParams

TINY = VecParams(vectors=700, collections=5, dim=16, seed=7)


def _items(p: VecParams) -> list:
    return [(c, list(vector_data.iter_items(p, c, batch=128))) for c in vector_data.plan_collections(p)]


def test_plan_sizes_names_and_kinds():
    plans = vector_data.plan_collections(VecParams(vectors=200_000, collections=20))
    assert sum(c.count for c in plans) == 200_000 and all(c.count >= 1 for c in plans)
    assert [c.kind for c in plans].count("knowledge") == 5 and [c.kind for c in plans].count("memory") == 4
    for c in plans:
        uid = {"knowledge": c.name, "file": c.name.removeprefix("file-"),
               "memory": c.name.removeprefix("user-memory-")}[c.kind]
        assert len(uid) == 36 and uid.count("-") == 4
    assert len({c.name for c in plans}) == 20
    assert plans == vector_data.plan_collections(VecParams(vectors=200_000, collections=20))
    assert sum(c.count for c in vector_data.plan_collections(VecParams(vectors=3, collections=5))) == 3


def test_items_are_deterministic_and_hridaai_like():
    a, b = _items(TINY), _items(TINY)
    for (ca, ia), (cb, ib) in zip(a, b):
        assert ca == cb and len(ia) == len(ib)
        for (ids1, v1, d1, m1), (ids2, v2, d2, m2) in zip(ia, ib):
            assert ids1 == ids2 and d1 == d2 and m1 == m2
            assert v1.tobytes() == v2.tobytes()
    for col, batches in a:
        ids = [i for b in batches for i in b[0]]
        assert len(ids) == col.count == len(set(ids))
        for ids_, vecs, docs, metas in batches:
            assert vecs.dtype == np.float32 and vecs.shape == (len(ids_), TINY.dim)
            assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
            for d, m in zip(docs, metas):
                if col.kind == "memory":
                    assert 30 <= len(d) < 300 and {"created_at", "updated_at", "type"} <= set(m)
                else:
                    assert 500 <= len(d) < 1000
                    assert {"name", "source", "file_id", "hash", "start_index", "created_by",
                            "embedding_config"} <= set(m)
                    assert ast.literal_eval(m["embedding_config"])["model"]  # a repr string, like HridaAI's
                    if col.kind == "file":
                        assert col.name == f"file-{m['file_id']}"
                assert all(isinstance(v, (str, int, float, bool)) for v in m.values())


def test_seed_changes_items():
    other = VecParams(vectors=TINY.vectors, collections=TINY.collections, dim=TINY.dim, seed=TINY.seed + 1)
    (ca, ia), (cb, ib) = _items(TINY)[0], _items(other)[0]
    assert ca.name != cb.name and ia[0][0] != ib[0][0]
    assert not np.array_equal(ia[0][1], ib[0][1])


def test_cache_key_depends_on_every_parameter():
    keys = {VecParams().key(), VecParams(vectors=1).key(), VecParams(collections=1).key(), VecParams(dim=8).key(),
            VecParams(seed=2).key()}
    assert len(keys) == 5 and VecParams().key() == VecParams().key()


def test_build_writes_the_same_chroma_store_twice(tmp_path):
    pytest.importorskip("chromadb")
    p = VecParams(vectors=300, collections=3, dim=8, seed=3)
    ma = vector_data.build(p, tmp_path / "a", log=lambda *_: None)
    mb = vector_data.build(p, tmp_path / "b", log=lambda *_: None)
    assert [(c["name"], c["count"]) for c in ma["collections"]] == [(c["name"], c["count"]) for c in mb["collections"]]
    assert ma["vectors"] == 300 and ma["document_bytes"] == mb["document_bytes"]
    da = vector_data.content_digest(tmp_path / "a/vector_db")
    assert da == vector_data.content_digest(tmp_path / "b/vector_db")
    assert sorted(da) == sorted(c.name for c in vector_data.plan_collections(p))
    assert (tmp_path / "a/hridaai.db").read_bytes() == (tmp_path / "b/hridaai.db").read_bytes()
    con = sqlite3.connect(tmp_path / "a/hridaai.db")
    assert con.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0] == 48
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [("0bd252b206fb",)]
    assert con.execute('SELECT count(*) FROM "user"').fetchone()[0] == 0
    # collection metadata as HridaAI creates it, read back through chromadb from a copy
    import shutil

    import chromadb
    from chromadb.config import Settings

    shutil.copytree(tmp_path / "a/vector_db", tmp_path / "copy")
    client = chromadb.PersistentClient(path=str(tmp_path / "copy"), settings=Settings(anonymized_telemetry=False))
    for c in client.list_collections():
        assert client.get_collection(c.name).metadata == {"hnsw:space": "cosine"}
    vector_data._release_chroma()


def _ev(ts, **kw):
    return {"ts": ts, "stage": "load", **kw}


def test_vector_timeline_from_events():
    events = [_ev(100.0, unit="chat", state="start"), _ev(101.0, unit="chat", state="done", rows=5),
              _ev(102.0, unit="vector:a", state="start", total_rows=10),
              _ev(103.0, unit="vector:a", batch=1, rows=10), _ev(104.0, unit="vector:a", state="done", rows=10),
              _ev(104.0, unit="vector:b", state="start"), _ev(106.0, unit="vector:b", state="done", rows=30),
              {"ts": 107.0, "stage": "finalize", "step": "vector-secondary-indexes"},
              {"ts": 109.0, "stage": "finalize", "step": "vector-index", "detail": "CREATE INDEX ..."},
              {"ts": 109.5, "stage": "finalize", "step": "indexes"},
              {"ts": 111.0, "stage": "finalize", "step": "done"}]
    t = vectors.vector_timeline(events, start_epoch=99.0, seconds=13.0)
    assert t["vectors"] == 40 and t["load_window_s"] == 4.0 and t["vectors_per_s"] == 10.0
    assert t["collections"]["b"] == {"rows": 30, "window_s": 2.0, "vectors_per_s": 15.0}
    assert t["phases_s"] == {"before_vectors_s": 3.0, "vector_load_s": 4.0, "index_builds_s": 3.0,
                             "rest_of_finalize_s": 2.0, "after_s": 1.0}
    assert sum(t["phases_s"].values()) == 13.0 and t["secondary_indexes_after_load_s"] == 1.0
    assert t["load_and_secondary_s"] == 5.0 and t["load_and_secondary_vectors_per_s"] == 8.0
    assert vectors.vector_timeline([], None, 1.0) == {"collections": {}}


def test_read_events_skips_noise(tmp_path):
    f = tmp_path / "err"
    f.write_text('warning: x\n{"ts": 1, "stage": "load"}\n{broken\n')
    assert vectors.read_events(f) == [{"ts": 1, "stage": "load"}]
    assert vectors.read_events(tmp_path / "missing") == []


def test_summary_and_table_without_migrate():
    manifest = {"vectors": 1000, "collections": [{"name": "x", "count": 1000}]}
    base = {"chroma_read": {"vectors_per_s": 5000.0, "seconds": 0.2},
            "ceiling": {"vectors_per_s": 4000.0, "seconds": 0.25, "connections": 2}}
    s = vector_report.summarize(manifest, base, [])
    assert [ln["vs_ceiling"] for ln in s["lines"]] == [1.25, 1.0]
    text = vector_report.render(s, "hdr")
    assert "chromadb read" in text and "ceiling" in text and "migrate run" not in text
    json.dumps(s)


def test_summary_with_a_migrate_run():
    manifest = {"vectors": 1000, "collections": [{"name": "x", "count": 1000}]}
    base = {"chroma_read": {"vectors_per_s": 5000.0, "seconds": 0.2},
            "ceiling": {"vectors_per_s": 4000.0, "seconds": 0.25, "connections": 2}}
    run = {"ok": True, "seconds": 10.0, "peak_rss_mb": 100.0,
           "vectors": {"vectors_per_s": 1000.0, "load_window_s": 1.0, "load_and_secondary_s": 2.0,
                       "phases_s": {"vector_load_s": 1.0}}}
    ver = {"ok": True, "seconds": 4.0, "peak_rss_mb": 90.0, "report": {"recall_at_10": 0.9, "self_retrieval": {}}}
    s = vector_report.summarize(manifest, base, [{"run": run, "verify": ver}])
    assert s["migrate"]["vs_ceiling"] == 0.25 and s["migrate"]["vs_chroma_read"] == 0.2
    assert [ln["vectors_per_s"] for ln in s["lines"][2:]] == [1000.0, 500.0, 100.0, 250.0]
    text = vector_report.render(s, "hdr")
    assert "recall@10 0.9" in text and "CPU:" not in text  # no CPU measured: nothing printed
    run.update(busy_core_s=15.0, tool_core_s=6.0)
    text = vector_report.render(vector_report.summarize(manifest, base, [{"run": run}]), "hdr")
    assert "tool 6.0, server and the rest 9.0" in text


# --- the real profile -------------------------------------------------------------------------------------------

REAL = VecParams(vectors=0, collections=300, profile="real")


def _uid(name: str) -> str:
    return name.removeprefix("file-").removeprefix("user-memory-")


@pytest.mark.parametrize("n", [300, 2000])
def test_real_plan_sizes_names_and_kinds(n):
    plan = vector_data.plan_real(VecParams(vectors=0, collections=n, profile="real"))
    cols = plan.collections
    assert len(cols) == n and [c.index for c in cols] == list(range(n)) and len({c.name for c in cols}) == n
    kinds = [c.kind for c in cols]
    n_kb, n_mem, n_files = vector_data.real_kinds(n)
    assert (kinds.count("knowledge"), kinds.count("memory"), kinds.count("file")) == (n_kb, n_mem, n_files)
    assert 2 <= n_kb <= 12 and n_mem == n // 100
    for c in cols:
        assert c.name.startswith({"knowledge": "", "file": "file-", "memory": "user-memory-"}[c.kind])
        uid = _uid(c.name)
        assert len(uid) == 36 and uid.count("-") == 4 and uid[14] == "4"
    files = sorted(c.count for c in cols if c.kind == "file")
    assert 40 <= files[len(files) // 2] <= 60  # median ~45 chunks
    assert sum(f < 500 for f in files) / len(files) > 0.95 and files[-1] > 500  # most small, a long tail
    assert all(1 <= c.count <= 12 for c in cols if c.kind == "memory")
    for k, members in plan.members.items():  # knowledge bases: copies of their files' chunks, thousands of them
        assert cols[k].kind == "knowledge" and members and all(cols[i].kind == "file" for i in members)
        assert cols[k].count == sum(cols[i].count for i in members) >= 1000
    assert plan == vector_data.plan_real(VecParams(vectors=0, collections=n, profile="real"))


def test_real_events_are_hridaai_order():
    plan = vector_data.plan_real(REAL)
    cols, ev = plan.collections, plan.events
    files = [e[1] for e in ev if e[0] == "file"]
    assert files == [c.index for c in cols if c.kind == "file"]
    for k, members in plan.members.items():  # a file's copy into its knowledge base follows its own add
        for i in members:
            assert ev.index(("knowledge", k, i)) > ev.index(("file", i))
    for c in cols:
        if c.kind == "memory":
            assert [e[2] for e in ev if e[0] == "memory" and e[1] == c.index] == list(range(c.count))
    parts = vector_data.real_parts(plan, files_per_part=100)
    assert [e for p in parts for e in p] == list(ev)
    assert [sum(e[0] == "file" for e in p) for p in parts] == [100, 100, len(files) - 200]


def test_real_items_copy_files_into_knowledge_bases():
    p = VecParams(vectors=0, collections=40, dim=8, seed=5, profile="real")
    plan = vector_data.plan_real(p)
    by_col: dict = {}
    calls = list(vector_data.iter_real_items(p, plan))
    for op, name, (ids, vecs, docs, metas) in calls:
        assert len(ids) <= vector_data.ADD_BATCH and vecs.shape == (len(ids), 8)
        assert op == ("upsert" if name.startswith("user-memory-") else "add")
        if op == "upsert":
            assert len(ids) == 1  # memories one at a time
        by_col.setdefault(name, []).append((ids, vecs, docs, metas))
    cols = plan.collections
    assert {c.name: sum(len(b[0]) for b in by_col.get(c.name, [])) for c in cols} == {c.name: c.count for c in cols}
    assert sum(1 for _op, name, _ in calls if name.startswith("file-")) == sum(1 for c in cols if c.kind == "file")
    k, members = next(iter(plan.members.items()))
    kb = [x for b in by_col[cols[k].name] for x in zip(*b)]
    src = [x for i in members for b in by_col[cols[i].name] for x in zip(*b)]
    assert [(d, m) for _i, _v, d, m in kb] == [(d, m) for _i, _v, d, m in src]  # same text and metadata
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(kb, src))  # same vectors
    assert not {a[0] for a in kb} & {b[0] for b in src}  # new chunk ids
    assert all(m["file_id"] == _uid(cols[i].name) for i in members for b in by_col[cols[i].name] for m in b[3])
    assert [c[1:] for c in calls][0][1][0] == list(vector_data.iter_real_items(p, plan))[0][2][0]  # deterministic


def test_real_cache_key():
    import chromadb

    uniform = VecParams(vectors=50_000, collections=20)
    legacy = json.dumps({"vectors": 50_000, "collections": 20, "dim": 384, "seed": 1,
                         "v": vector_data.VECTOR_GENERATOR_VERSION, "chromadb": chromadb.__version__}, sort_keys=True)
    import hashlib

    assert uniform.key() == "vectors-" + hashlib.sha256(legacy.encode()).hexdigest()[:16]  # cached stores stay valid
    keys = {REAL.key(), VecParams(vectors=0, collections=2000, profile="real").key(),
            VecParams(vectors=0, collections=300, seed=2, profile="real").key(),
            VecParams(vectors=0, collections=300, profile="uniform").key()}
    assert len(keys) == 4
    assert vector_data.params("real", 50_000, None, 384, 1) == REAL
    assert vector_data.params("uniform", 50_000, None, 384, 1) == uniform
    with pytest.raises(ValueError):
        VecParams(profile="nope")
    with pytest.raises(ValueError):
        vector_data.plan_real(VecParams(vectors=0, collections=2, profile="real"))


def test_build_real_tiny_store(tmp_path, monkeypatch):
    pytest.importorskip("chromadb")
    p = VecParams(vectors=0, collections=12, dim=8, seed=3, profile="real")
    monkeypatch.setattr(vector_data, "REAL_PART_FILES", 6)  # two child processes
    m = vector_data.build(p, tmp_path / "a", log=lambda *_: None)
    plan = vector_data.plan_real(p)
    assert m["parts"] == 2 and len(m["child_peak_rss_mb"]) == 2
    assert [(c["name"], c["count"]) for c in m["collections"]] == [(c.name, c.count) for c in plan.collections]
    assert m["vectors"] == sum(c.count for c in plan.collections)
    assert {k: v["collections"] for k, v in m["by_kind"].items()} == {"file": 10, "knowledge": 1, "memory": 1}
    # nothing reaches chromadb's sync_threshold of 1000 here: every vector is only in embeddings_queue
    assert m["vectors_queue_only"] == m["embeddings_queue_rows"] == m["vectors"] and m["collections_persisted"] == 0
    digest = vector_data.content_digest(tmp_path / "a/vector_db")
    assert sorted(digest) == sorted(c.name for c in plan.collections)
    monkeypatch.setattr(vector_data, "REAL_PART_FILES", 250)  # one: the parts do not change the content
    m2 = vector_data.build(p, tmp_path / "b", log=lambda *_: None)
    assert m2["parts"] == 1
    assert m2["document_bytes"] == m["document_bytes"]
    assert vector_data.content_digest(tmp_path / "b/vector_db") == digest
    assert "12 collections: 10 file" in vector_data.describe_real(m)


def test_real_summary_and_table():
    manifest = {"vectors": 1000, "collections": [{"name": "x", "count": 1000}]}
    base = {"chroma_read": {"vectors_per_s": 5000.0, "seconds": 0.2},
            "ceiling": {"vectors_per_s": 500.0, "seconds": 2.0, "connections": 2, "includes_indexes": True,
                        "copy_s": 1.0, "copy_vectors_per_s": 1000.0, "secondary_indexes_s": 0.5,
                        "vector_index_s": 0.5, "vector_index": "CREATE INDEX ..."}}
    run = {"ok": True, "seconds": 8.0, "peak_rss_mb": 100.0,
           "rss_by_role": {"main": {"count": 1, "max_mb": 100.0, "peaks_mb": [100.0]},
                           "worker": {"count": 2, "max_mb": 80.0, "peaks_mb": [80.0, 70.0]}},
           "vectors": {"vectors_per_s": 1000.0, "load_window_s": 1.0, "load_and_secondary_s": 2.0,
                       "load_and_indexes_s": 4.0, "phases_s": {"vector_load_s": 1.0}}}
    s = vector_report.summarize(manifest, base, [{"run": run}])
    v = s["versus_ceiling"]
    assert (v["run_over_ceiling"], v["ceiling_over_run"], v["vector_part_over_ceiling"]) == (4.0, 0.25, 2.0)
    assert [ln["name"] for ln in s["lines"]][1:3] == ["ceiling: raw COPY, 2 conn, + btree/GIN/vector index",
                                                      "ceiling: its raw COPY alone (primary key only)"]
    text = vector_report.render(s, "hdr")
    assert "migrate run 8.0 s = 4.00x the ceiling's time (ceiling/run 0.25x" in text
    assert "peak RSS per process: main 100 MB; 2 worker 80/70 MB" in text
    assert vector_report.summarize(manifest, {}, [{"run": run}])["versus_ceiling"] is None


def test_vector_timeline_load_and_indexes():
    events = [_ev(1.0, unit="vector:a", state="start"), _ev(3.0, unit="vector:a", state="done", rows=4),
              {"ts": 4.0, "stage": "finalize", "step": "vector-secondary-indexes"},
              {"ts": 6.5, "stage": "finalize", "step": "vector-index"}]
    assert vectors.vector_timeline(events, 0.0, 7.0)["load_and_indexes_s"] == 5.5


def test_profile_options():
    a = vectors.parse_args(["--profile", "real", "--collections", "2000", "--split-cpus"])
    assert vectors.dataset_params(a) == VecParams(vectors=0, collections=2000, profile="real")
    assert a.split_cpus == "auto"
    assert vectors.dataset_params(vectors.parse_args([])) == VecParams(vectors=50_000, collections=20)
    assert vectors.parse_args(["--split-cpus", "0:1"]).split_cpus == "0:1"
    assert vectors.parse_args([]).split_cpus is None
