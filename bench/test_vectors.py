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
    assert t["phases_s"] == {"before_vectors_s": 3.0, "vector_load_s": 4.0, "secondary_indexes_s": 1.0,
                             "vector_index_s": 2.0, "rest_of_finalize_s": 2.0, "after_s": 1.0}
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
