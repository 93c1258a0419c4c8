"""The direct Chroma file reader yields exactly what chromadb's get pages yield, or refuses.

Every equality test reads one copy of a store with chromadb (``iter_batches_client``) and
another copy with :mod:`migrator.sources.chroma.direct`, chunk by chunk.  Stores are copied
before chromadb opens them: chromadb rewrites a store it opens.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from migrator.sources.chroma import client as chroma, direct as chroma_direct
from migrator.sources.chroma.client import Chunk

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = [ROOT / "fixtures/hridaai-0.12.4-small/vector_db",
            ROOT / "fixtures/hridaai-0.12.4-upgraded-from-0.6.26/vector_db"]

# Built in a child process so chromadb exits cleanly and leaves the files as a real install would.
_GENERATE = textwrap.dedent('''
    import sys, numpy as np, chromadb
    from chromadb.config import Settings
    client = chromadb.PersistentClient(path=sys.argv[1], settings=Settings(anonymized_telemetry=False))
    rng = np.random.default_rng(7)

    def vecs(n, dim):
        return rng.standard_normal((n, dim)).astype(np.float32)

    special_ids = ["1", "01", "10", "2", "0x1f", "e1"]
    special_docs = [None, "", "naïve café שלום 😀", "a\\x00b", "x" * 10240, "plain"]
    special_meta = [
        {"b": True, "b0": False}, {"big": 2**62, "neg": -2**63, "zero": 0},
        {"negzero": -0.0, "tiny": 1e-300, "third": 1 / 3, "huge": 1.7e308},
        {"s": "", "u": "ünï\\x00", "mixed": 1, "f": 2.5, "t": True}, None, {"chroma:x": 1},
    ]
    big = client.create_collection("big-cosine", metadata={"hnsw:space": "cosine"},
                                   embedding_function=None)
    big.add(ids=special_ids, embeddings=vecs(6, 12), documents=special_docs, metadatas=special_meta)
    for lo in range(0, 2500, 400):
        n = min(400, 2500 - lo)
        big.add(ids=[f"c{j}" for j in range(lo, lo + n)], embeddings=vecs(n, 12),
                documents=[f"chunk {j}" for j in range(lo, lo + n)],
                metadatas=[{"j": j, "even": j % 2 == 0, "x": j / 7, "src": f"f{j % 5}"}
                           for j in range(lo, lo + n)])
    big.delete(ids=["c5", "c7", "2", "c2400"])
    big.update(ids=["c10", "c2410", "01"], metadatas=[{"j": None, "new": 1}] * 3)
    big.update(ids=["c11", "c2411", "10"], embeddings=vecs(3, 12))
    big.upsert(ids=["c12", "c2412", "brand-new"], embeddings=vecs(3, 12),
               documents=["u1", "u2", "u3"], metadatas=[{"u": 1}, {"u": 2}, {"u": 3}])
    big.add(ids=special_ids[:1] + ["late-1", "late-2"], embeddings=vecs(3, 12),
            documents=special_docs[:3], metadatas=special_meta[:3])

    for name, meta in (("full-l2", {"hnsw:space": "l2"}), ("full-ip", {"hnsw:space": "ip"}),
                       ("full-default", None)):
        col = client.create_collection(name, metadata=meta, embedding_function=None)
        for lo in range(0, 1000, 250):
            col.add(ids=[f"{name}-{j}" for j in range(lo, lo + 250)], embeddings=vecs(250, 8),
                    documents=[f"d{j}" for j in range(lo, lo + 250)],
                    metadatas=[{"j": j} for j in range(lo, lo + 250)])
    small = client.create_collection("small-cosine", metadata={"hnsw:space": "cosine"},
                                     embedding_function=None)
    small.add(ids=[f"s{j}" for j in range(300)], embeddings=vecs(300, 8),
              metadatas=[{"j": j} for j in range(300)])
    small.delete(ids=["s3"])

    # every operation kind left in the queue (never persisted), per space
    for space in ("cosine", "l2", "ip"):
        q = client.create_collection(f"queue-ops-{space}", metadata={"hnsw:space": space},
                                     embedding_function=None)
        q.add(ids=[f"q{j}" for j in range(50)], embeddings=vecs(50, 8), documents=[f"q{j}" for j in range(50)])
        q.delete(ids=["q1", "q2", "nope"])                    # DELETE of held ids, and of an id never added
        q.add(ids=["q1"], embeddings=vecs(1, 8))               # DELETE then ADD: the new vector
        q.update(ids=["q2"], embeddings=vecs(1, 8))            # UPDATE of a deleted id: ignored
        q.upsert(ids=["q3", "q60"], embeddings=vecs(2, 8))     # UPSERT: replaces, and adds
        q.update(ids=["q4"], metadatas=[{"m": 1}])  # UPDATE without a vector keeps the vector
        q.add(ids=["q5"], embeddings=vecs(1, 8))               # ADD of a held id: ignored
        q.update(ids=["q6"], embeddings=vecs(1, 8))
        q.update(ids=["q6"], embeddings=vecs(1, 8))            # the last one wins
    # persisted, then every operation kind on top of the files
    p = client.create_collection("persisted-then-ops", metadata={"hnsw:space": "cosine"},
                                 embedding_function=None)
    p.add(ids=[f"p{j}" for j in range(1200)], embeddings=vecs(1200, 8))
    p.delete(ids=["p1", "p2"])
    p.add(ids=["p1", "p0"], embeddings=vecs(2, 8))
    p.upsert(ids=["p3", "p2000"], embeddings=vecs(2, 8))
    p.update(ids=["p4", "p2"], embeddings=vecs(2, 8))
    p.delete(ids=["p7"])
    # everything deleted: an empty id map once persisted
    e = client.create_collection("emptied", embedding_function=None)
    e.add(ids=[f"e{j}" for j in range(1100)], embeddings=vecs(1100, 4))
    e.delete(ids=[f"e{j}" for j in range(1100)])
    e.add(ids=["e5", "fresh"], embeddings=vecs(2, 4))
''')


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chromadb 1.5.9 store covering spaces, persisted + queued vectors and edge values."""
    path = tmp_path_factory.mktemp("gen") / "vector_db"
    subprocess.run([sys.executable, "-c", _GENERATE, str(path)], check=True, timeout=120)
    return path


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _typed(meta: dict[str, Any] | None) -> Any:
    """Metadata with each value's type and repr (so True != 1 and -0.0 != 0.0)."""
    return None if meta is None else {k: (type(v).__name__, repr(v)) for k, v in meta.items()}


def _assert_same(expected: list[Chunk], got: list[Chunk]) -> None:
    assert [c.id for c in got] == [c.id for c in expected]
    for e, g in zip(expected, got):
        assert g.document == e.document, e.id
        assert _typed(g.metadata) == _typed(e.metadata), e.id
        assert (g.embedding is None) == (e.embedding is None), e.id
        if e.embedding is not None:
            assert g.embedding.dtype == np.float32 and g.embedding.ndim == 1
            assert np.array_equal(g.embedding, e.embedding), e.id
            assert g.embedding.tobytes() == e.embedding.tobytes(), e.id


def _compare_store(store: Path, tmp: Path) -> dict[str, chroma_direct.CollectionReader]:
    """Read every collection both ways; return the direct readers by collection name."""
    client = chroma.open_client(_copy(store, tmp / "for-chromadb"))
    direct = chroma_direct.open_store(_copy(store, tmp / "for-direct"))
    assert direct is not None
    readers = {}
    for name in sorted(c.name for c in client.list_collections()):
        col = client.get_collection(name, embedding_function=None)
        reader = direct.reader(name, fallback_col=col)
        assert reader is not None, name
        expected = [c for b in chroma.iter_batches_client(client, name, batch_size=300)
                    for c in b.chunks]
        assert reader.count == len(expected) == col.count()
        _assert_same(expected, [c for b in reader.iter_batches(batch_size=300) for c in b.chunks])
        readers[name] = reader
    return readers


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.parent.name)
def test_real_fixtures_equal_chromadb(fixture: Path, tmp_path: Path) -> None:
    readers = _compare_store(fixture, tmp_path)
    assert readers and sum(r.count for r in readers.values()) > 600


def test_generated_store_equals_chromadb(generated: Path, tmp_path: Path) -> None:
    readers = _compare_store(generated, tmp_path)
    assert all(r.fallback_count == 0 for r in readers.values())  # chromadb is never needed
    big = readers["big-cosine"]
    assert 0 < big.queue_count < big.count / 10  # mostly from the files, the tail from the queue
    for name in ("full-l2", "full-ip", "full-default"):
        assert readers[name].count == 1000 and readers[name].queue_count == 0
    assert readers["small-cosine"].queue_count == 299  # never persisted: all from the queue
    for space in ("cosine", "l2", "ip"):
        assert readers[f"queue-ops-{space}"].count == readers[f"queue-ops-{space}"].queue_count == 50
    assert 0 < readers["persisted-then-ops"].queue_count < 10 and readers["persisted-then-ops"].count == 1199
    assert readers["emptied"].count == 2


def test_order_is_ascending_metadata_rowid(generated: Path, tmp_path: Path) -> None:
    store = chroma_direct.open_store(_copy(generated, tmp_path / "s"))
    reader = store.reader("full-l2")
    db = sqlite3.connect(tmp_path / "s" / "chroma.sqlite3")
    seg = db.execute("SELECT s.id FROM segments s JOIN collections c ON c.id = s.collection "
                     "WHERE c.name = 'full-l2' AND s.scope = 'METADATA'").fetchone()[0]
    by_rowid = [r[0] for r in db.execute(
        "SELECT embedding_id FROM embeddings WHERE segment_id = ? ORDER BY id", (seg,))]
    assert [c.id for b in reader.iter_batches() for c in b.chunks] == by_rowid


def test_resume_from_any_ordinal_is_the_tail(generated: Path, tmp_path: Path) -> None:
    client = chroma.open_client(_copy(generated, tmp_path / "c"))
    col = client.get_collection("big-cosine", embedding_function=None)
    reader = chroma_direct.open_store(_copy(generated, tmp_path / "d")).reader(
        "big-cosine", fallback_col=col)
    full = [c for b in reader.iter_batches(batch_size=1000) for c in b.chunks]
    for start in (0, 1, 299, 1000, 2333, reader.count - 1, reader.count):
        batches = list(reader.iter_batches(batch_size=256, start=start))
        assert [b.start for b in batches] == list(range(start, reader.count, 256))
        assert all(b.end == b.start + len(b.chunks) for b in batches)
        _assert_same(full[start:], [c for b in batches for c in b.chunks])
    expected = [c for b in chroma.iter_batches_client(client, "big-cosine", start=1777) for c in b.chunks]
    _assert_same(expected, [c for b in reader.iter_batches(start=1777) for c in b.chunks])


def _vector_dir(store: Path, name: str) -> Path:
    db = sqlite3.connect(f"file:{store / 'chroma.sqlite3'}?mode=ro", uri=True)
    seg = db.execute("SELECT s.id FROM segments s JOIN collections c ON c.id = s.collection "
                     "WHERE c.name = ? AND s.scope = 'VECTOR'", (name,)).fetchone()[0]
    db.close()
    return store / seg


def test_refuses_truncated_level0(generated: Path, tmp_path: Path) -> None:
    store = _copy(generated, tmp_path / "s")
    level0 = _vector_dir(store, "full-ip") / "data_level0.bin"
    os.truncate(level0, level0.stat().st_size // 2)
    direct = chroma_direct.open_store(store)
    assert direct.reader("full-ip") is None
    assert direct.reader("full-l2") is not None  # other collections stay readable


def test_refuses_garbled_header(generated: Path, tmp_path: Path) -> None:
    store = _copy(generated, tmp_path / "s")
    (_vector_dir(store, "full-l2") / "header.bin").write_bytes(b"\x02" + b"\x00" * 99)
    assert chroma_direct.open_store(store).reader("full-l2") is None


class _Trap:
    """Unpickling this would create ``marker``: the reader must never do it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_refuses_pickle_with_classes_without_unpickling_them(generated: Path, tmp_path: Path) -> None:
    store = _copy(generated, tmp_path / "s")
    marker = tmp_path / "unpickled"
    with open(_vector_dir(store, "full-l2") / "index_metadata.pickle", "wb") as f:
        pickle.dump({"id_to_label": {"x": 1}, "label_to_id": {1: "x"}, "trap": _Trap(marker)}, f,
                    protocol=3)
    assert chroma_direct.open_store(store).reader("full-l2") is None
    assert not marker.exists()


def test_queue_rows_it_does_not_know_go_through_chromadb(generated: Path, tmp_path: Path) -> None:
    store = _copy(generated, tmp_path / "s")
    db = sqlite3.connect(store / "chroma.sqlite3")
    topic = "persistent://default/default/" + db.execute(
        "SELECT id FROM collections WHERE name = 'queue-ops-l2'").fetchone()[0]
    db.execute("UPDATE embeddings_queue SET operation = 7 WHERE seq_id = (SELECT max(seq_id) FROM embeddings_queue "
               "WHERE topic = ?)", (topic,))
    db.commit()
    db.close()
    direct = chroma_direct.open_store(store)
    assert direct.reader("queue-ops-l2") is None  # without chromadb to fall back on: refused
    assert direct.reader("queue-ops-ip").fallback_count == 0  # the other collections are not concerned
    assert direct.reader("small-cosine").fallback_count == 0 and direct.reader("big-cosine").fallback_count == 0
    assert direct.reader("full-default").fallback_count == 0
    assert direct.reader("no-such-collection") is None
    direct.close()


def test_refuses_unknown_layouts(generated: Path, tmp_path: Path) -> None:
    assert chroma_direct.open_store(tmp_path) is None  # no chroma.sqlite3
    store = _copy(generated, tmp_path / "s")
    db = sqlite3.connect(store / "chroma.sqlite3")
    db.execute("INSERT INTO migrations (dir, version, filename, sql, hash) "
               "VALUES ('metadb', 7, 'future.sql', '', '')")
    db.commit()
    db.close()
    assert chroma_direct.open_store(store) is None


def test_refuses_array_metadata_and_odd_value_types(generated: Path, tmp_path: Path) -> None:
    store = _copy(generated, tmp_path / "s")
    db = sqlite3.connect(store / "chroma.sqlite3")
    rowid = {name: db.execute(
        "SELECT e.id FROM embeddings e JOIN segments s ON s.id = e.segment_id JOIN collections c "
        "ON c.id = s.collection WHERE c.name = ? ORDER BY e.id LIMIT 1", (name,)).fetchone()[0]
        for name in ("full-ip", "full-l2")}
    db.execute("INSERT INTO embedding_metadata_array (id, key, int_value) VALUES (?, 'arr', 1)",
               (rowid["full-ip"],))
    db.execute("UPDATE embedding_metadata SET int_value = 'text' WHERE id = ? AND key = 'j'",
               (rowid["full-l2"],))
    db.commit()
    db.close()
    direct = chroma_direct.open_store(store)
    assert direct.reader("full-ip") is None
    with pytest.raises(chroma_direct.UnexpectedValue):
        list(direct.reader("full-l2").iter_batches())


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.parent.name)
def test_catalog_describes_like_chromadb(fixture: Path, tmp_path: Path) -> None:
    """run/verify describe the store from its files: the same collections, counts, dimensions, spaces, keys and ids
    in the same order as chromadb's describe_client(scan=False) and get pages."""
    _assert_catalog_equal(_copy(fixture, tmp_path / "store"))


def test_catalog_describes_generated_store_like_chromadb(generated: Path, tmp_path: Path) -> None:
    _assert_catalog_equal(_copy(generated, tmp_path / "store"))


def _assert_catalog_equal(store_dir: Path) -> None:
    from migrator.sources.chroma import collections as chroma_catalog
    from migrator.vectors import source as vectors_source

    direct = chroma_direct.open_store(store_dir)
    assert direct is not None
    try:  # all read before chromadb opens the store (it may rewrite it)
        got = chroma_catalog.describe(direct)
        assert got is not None
        got_ids = {g.name: chroma_catalog.ids(direct, g.id) for g in got}
    finally:
        direct.close()
    client = chroma.open_client(store_dir)
    want = chroma.describe_client(client, scan=False)
    assert [g.__dict__ for g in got] == [w.__dict__ for w in want]
    assert got_ids == {w.name: vectors_source.ids(client, w.name) for w in want}


def test_verify_cross_check_finds_a_direct_reader_that_disagrees_with_chromadb(generated, tmp_path, monkeypatch):
    """verify reads the source with the direct reader and re-reads a sample through chromadb: a reader off by the
    last bit of one vector is caught (here: the cosine round trip of queue-held vectors left out)."""
    from types import SimpleNamespace

    from migrator.sources.chroma import queue as chroma_queue
    from migrator.vectors import verify as vectors_verify

    store = _copy(generated, tmp_path / "snap")
    (tmp_path / "w").mkdir()
    job = vectors_verify.CrossCheckJob(SimpleNamespace(work_dir=tmp_path / "w"),
                                       SimpleNamespace(vector_path=store, snapshot_id="s1"),
                                       ["small-cosine", "full-l2"])
    assert vectors_verify.w_cross_check(job) == {"collections": 2, "chunks": 1299, "differs": []}
    assert not (tmp_path / "w" / "chroma-check").exists()
    monkeypatch.setattr(chroma_queue, "hnsw_round_trip", lambda v: v)
    found = vectors_verify.w_cross_check(job)
    assert found["chunks"] == 1299 and len(found["differs"]) > 100
    assert all(d.startswith("small-cosine/") for d in found["differs"])  # full-l2 is read from the HNSW files
