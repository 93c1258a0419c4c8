"""migrator.sources.chroma against real Chroma stores (chromadb 1.5.9) and the real 0.12.4 fixture."""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

chromadb = pytest.importorskip("chromadb")
from chromadb.config import Settings  # noqa: E402

from migrator.errors import UsageError  # noqa: E402
from migrator.sources.chroma import client as chroma  # noqa: E402

BIG, SMALL, IP = "big-cosine", "small-l2", "tiny-ip"
BIG_N = 1500  # > sync_threshold (1000): part of the vectors leave embeddings_queue for HNSW files
FIXTURES = {"hridaai-0.12.4-small": 662, "hridaai-0.12.4-upgraded-from-0.6.26": 639}


def _fixture_dir(name: str) -> Path | None:
    """The repo's committed fixtures/, else shared/fixtures-real beside the checkout."""
    here = Path(__file__).resolve()
    for base in (here.parents[1] / "fixtures", here.parents[2] / "shared" / "fixtures-real",
                 Path("/work/shared/fixtures-real")):
        if (base / name / "vector_db").is_dir():
            return base / name
    return None


def _writable_copy(src: Path, dst: Path) -> Path:
    """Snapshot a store the way the snapshot stage must: copy, then make the copy writable."""
    shutil.copytree(src, dst)
    for root, dirs, files in os.walk(dst):
        for name in dirs + files:
            p = os.path.join(root, name)
            os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR)
    os.chmod(dst, os.stat(dst).st_mode | stat.S_IWUSR)
    return dst


def _build(path: Path) -> dict:
    """Write a store with chromadb as HridaAI would: cosine + legacy l2 + ip collections."""
    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    rng = np.random.default_rng(7)
    big_ids = [f"chunk-{int(i):05d}" for i in rng.permutation(BIG_N)]  # insertion order != sorted
    big_emb = rng.standard_normal((BIG_N, 384)).astype(np.float32)
    big_meta = [
        {"file_id": "f-1", "start_index": i, "score": i / 7, "ok": i % 2 == 0, "name": "a.pdf"}
        for i in range(BIG_N)
    ]
    big = client.create_collection(BIG, metadata={"hnsw:space": "cosine"}, embedding_function=None)
    for s in range(0, BIG_N, 500):
        big.add(ids=big_ids[s:s + 500], embeddings=big_emb[s:s + 500],
                documents=[f"text {i}" for i in range(s, s + 500)], metadatas=big_meta[s:s + 500])
    small_emb = rng.standard_normal((4, 768)).astype(np.float32)
    small = client.create_collection(SMALL, embedding_function=None)  # pre-0.3.33: no hnsw:space
    small.add(ids=["s1", "s2", "s3", "s4"], embeddings=small_emb,
              documents=["nul\x00inside", None, "plain", "ünïcødé ✓"],
              metadatas=[{"page": 1, "title": "t"}, None, {"ratio": 0.25}, {"flag": False}])
    ip = client.create_collection(IP, metadata={"hnsw:space": "ip"}, embedding_function=None)
    ip.add(ids=["p1", "p2"], embeddings=np.eye(2, 16, dtype=np.float32), documents=["a", "b"])
    return {"big_ids": big_ids, "big_emb": big_emb, "big_meta": big_meta, "small_emb": small_emb}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("chroma") / "vector_db"
    data = _build(path)
    return path, data


@pytest.fixture
def store(built, tmp_path):
    """A fresh snapshot copy of the built store for each test."""
    return _writable_copy(built[0], tmp_path / "vector_db")


def _same_meta(got: dict, want: dict) -> bool:
    """Equal keys, types and values; floats within 1 ulp."""
    return got.keys() == want.keys() and all(
        type(got[k]) is type(want[k])
        and (got[k] == want[k] or (isinstance(want[k], float) and abs(got[k] - want[k])
                                   <= np.spacing(abs(want[k]))))
        for k in want)


def info_id(db, name):
    return db.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()[0]


def _all_chunks(path, name, **kw):
    return [c for b in chroma.iter_batches(path, name, **kw) for c in b.chunks]


def test_fixture_has_vectors_both_in_hnsw_files_and_in_queue(built):
    db = sqlite3.connect(f"file:{built[0]}/chroma.sqlite3?mode=ro", uri=True)
    queued = dict(db.execute(
        "SELECT c.name, count(q.seq_id) FROM collections c LEFT JOIN embeddings_queue q "
        "ON q.topic LIKE '%' || c.id GROUP BY c.name"))
    assert queued[SMALL] == 4 and queued[IP] == 2
    assert queued[BIG] < BIG_N  # the rest were purged: they exist only in the HNSW files
    seg = db.execute("SELECT s.id FROM segments s JOIN collections c ON c.id = s.collection "
                     "WHERE c.name = ? AND s.scope = 'VECTOR'", (BIG,)).fetchone()[0]
    assert (built[0] / seg / "data_level0.bin").stat().st_size > 0


def test_describe(store):
    infos = chroma.describe(store)
    assert [i.name for i in infos] == sorted([BIG, SMALL, IP])
    by = {i.name: i for i in infos}
    assert (by[BIG].count, by[BIG].dimension, by[BIG].space) == (BIG_N, 384, "cosine")
    assert by[BIG].metadata_keys == ["file_id", "name", "ok", "score", "start_index"]
    assert (by[SMALL].count, by[SMALL].dimension, by[SMALL].space) == (4, 768, "l2")
    assert by[SMALL].metadata_keys == ["flag", "page", "ratio", "title"]
    assert (by[IP].dimension, by[IP].space, by[IP].metadata_keys) == (16, "ip", [])
    assert all(i.missing_vectors == 0 for i in infos)


def test_space_comes_from_metadata_not_config_json(store):
    # Chroma's migrations fill config_json_str with defaults (space l2) for old collections,
    # whatever hnsw:space they were built with: make the copy lie like that.
    db = sqlite3.connect(f"{store}/chroma.sqlite3")
    db.execute("UPDATE collections SET config_json_str = ? WHERE name = ?",
               ('{"hnsw_configuration": {"space": "l2", "_type": "HNSWConfigurationInternal"}}', BIG))
    db.commit()
    db.close()
    assert {i.name: i.space for i in chroma.describe(store)}[BIG] == "cosine"


def test_iter_batches_values(store, built):
    data = built[1]
    chunks = _all_chunks(store, BIG, batch_size=400)
    assert [c.id for c in chunks] == data["big_ids"]  # insertion order
    got = np.stack([c.embedding for c in chunks])
    assert got.dtype == np.float32 and got.shape == (BIG_N, 384)
    # cosine HNSW keeps unit vectors + norms, so get() differs from the input by float32 rounding
    np.testing.assert_allclose(got, data["big_emb"], rtol=1e-5, atol=1e-6)
    # Chroma's own write path stores some floats 1 ulp off (seen in chroma.sqlite3 itself)
    assert all(_same_meta(c.metadata, m) for c, m in zip(chunks, data["big_meta"]))
    assert type(chunks[3].metadata["ok"]) is bool and type(chunks[3].metadata["start_index"]) is int
    small = _all_chunks(store, SMALL)
    assert np.array_equal(np.stack([c.embedding for c in small]), data["small_emb"])  # from queue
    assert [c.document for c in small] == ["nul\x00inside", None, "plain", "ünïcødé ✓"]
    assert small[1].metadata is None


def test_iter_batches_equal_chromadb_get_exactly(store):
    col = chroma.open_client(store).get_collection(BIG)
    ref = col.get(include=["embeddings", "documents", "metadatas"])
    chunks = _all_chunks(store, BIG, batch_size=333)
    assert [c.id for c in chunks] == ref["ids"]
    assert np.array_equal(np.stack([c.embedding for c in chunks]),
                          np.asarray(ref["embeddings"]).astype(np.float32))
    assert np.array_equal(np.stack([c.embedding for c in chunks]).astype(np.float64),
                          np.asarray(ref["embeddings"]))  # the float32 cast loses nothing
    assert [c.document for c in chunks] == ref["documents"]


def test_order_is_deterministic_and_start_resumes(built, tmp_path):
    a = _writable_copy(built[0], tmp_path / "a")
    b = _writable_copy(built[0], tmp_path / "b")
    ids_a = [c.id for c in _all_chunks(a, BIG, batch_size=250)]
    assert ids_a == [c.id for c in _all_chunks(a, BIG, batch_size=1000)]
    assert ids_a == [c.id for c in _all_chunks(b, BIG, batch_size=77)]  # other client, same order
    code = ("import sys; from migrator.sources.chroma import client as chroma; print(' '.join(c.id for b in "
            f"chroma.iter_batches(sys.argv[1], {BIG!r}, batch_size=500) for c in b.chunks))")
    out = subprocess.run([sys.executable, "-c", code, str(b)], check=True, capture_output=True,
                         text=True, cwd=Path(chroma.__file__).parents[2]).stdout
    assert out.split() == ids_a  # a restarted process (resume after a crash) sees the same order
    batches = list(chroma.iter_batches(a, BIG, batch_size=400, start=1000))
    assert [x.start for x in batches] == [1000, 1400]
    assert [x.end for x in batches] == [1400, 1500]
    assert [c.id for x in batches for c in x.chunks] == ids_a[1000:]
    assert list(chroma.iter_batches(a, BIG, start=BIG_N)) == []


def test_missing_vectors_counted_and_yielded_as_none(store, built):
    """Fault injection: the HNSW segment files are lost; only the queued vectors survive."""
    db = sqlite3.connect(f"{store}/chroma.sqlite3")
    seg = db.execute("SELECT s.id FROM segments s JOIN collections c ON c.id = s.collection "
                     "WHERE c.name = ? AND s.scope = 'VECTOR'", (BIG,)).fetchone()[0]
    queued = db.execute("SELECT count(*) FROM embeddings_queue WHERE topic LIKE ?",
                        (f"%{info_id(db, BIG)}",)).fetchone()[0]
    db.close()
    db.close()
    shutil.rmtree(store / seg)
    info = {i.name: i for i in chroma.describe(store)}[BIG]
    assert info.count == BIG_N and info.dimension == 384
    # Chroma replays the vectors still queued; the ones only in the HNSW files are gone
    assert 0 < info.missing_vectors == BIG_N - queued
    chunks = _all_chunks(store, BIG)
    lost = [c.id for c in chunks if c.embedding is None]
    assert lost == built[1]["big_ids"][:info.missing_vectors]
    assert all(c.document is not None for c in chunks)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_real_fixture_matches_manifest(name, tmp_path):
    fixture = _fixture_dir(name)
    if fixture is None:
        pytest.skip(f"fixture {name} not found")
    manifest = (fixture / "MANIFEST.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \| (\d+) \| (\d+) \|$", manifest, re.M)
    store = _writable_copy(fixture / "vector_db", tmp_path / "vector_db")
    infos = chroma.describe(store)
    assert [(i.name, i.dimension, i.count) for i in infos] == [(n, int(d), int(c)) for n, d, c in rows]
    assert sum(i.count for i in infos) == FIXTURES[name]
    # the upgraded store's config_json_str says l2 (Chroma migration defaults); metadata says cosine
    assert {i.space for i in infos} == {"cosine"} and all(i.missing_vectors == 0 for i in infos)
    files = [i for i in infos if i.name.startswith("file-")]
    assert all({"file_id", "hash", "name", "source", "start_index"} <= set(i.metadata_keys)
               for i in files)
    client = chroma.open_client(store)
    for info in infos:
        ref = client.get_collection(info.name).get(include=["embeddings", "documents", "metadatas"])
        chunks = _all_chunks(store, info.name, batch_size=50)
        assert [c.id for c in chunks] == ref["ids"]
        assert np.array_equal(np.stack([c.embedding for c in chunks]).astype(np.float64),
                              np.asarray(ref["embeddings"]))
        assert [c.metadata for c in chunks] == ref["metadatas"]
        assert [c.document for c in chunks] == ref["documents"]


def test_open_client_refuses_read_only_and_non_stores(built, tmp_path):
    with pytest.raises(UsageError, match="chroma.sqlite3"):
        chroma.open_client(tmp_path)
    ro = tmp_path / "ro"
    shutil.copytree(built[0], ro)
    os.chmod(ro / "chroma.sqlite3", 0o444)
    with pytest.raises(UsageError, match="read-only") as exc:
        chroma.open_client(ro)
    assert "writable copy" in exc.value.hint


def test_bad_arguments(store):
    with pytest.raises(ValueError):
        next(chroma.iter_batches(store, BIG, batch_size=0))
    with pytest.raises(ValueError):
        next(chroma.iter_batches(store, BIG, start=-1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_client_reads_a_chroma_server(store, built):
    exe = Path(sys.executable).with_name("chroma")
    if not exe.exists():
        pytest.skip("chroma CLI not installed")
    port = _free_port()
    proc = subprocess.Popen([str(exe), "run", "--path", str(store), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = None
        for _ in range(100):
            try:
                client = chroma.http_client("localhost", port=port)
                client.heartbeat()
                break
            except Exception:
                time.sleep(0.1)
        infos = chroma.describe_client(client)
        assert [(i.name, i.count, i.dimension) for i in infos] == [
            (BIG, BIG_N, 384), (SMALL, 4, 768), (IP, 2, 16)]
        chunks = [c for b in chroma.iter_batches_client(client, BIG, batch_size=600)
                  for c in b.chunks]
        assert [c.id for c in chunks] == built[1]["big_ids"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_known_schema_versions_are_what_the_installed_chromadb_writes(tmp_path):
    # the plan refuses a store a newer chromadb wrote by comparing with these; a known release is not measured (it
    # costs a chromadb import and a new store), so the table must hold what a measurement gives
    from importlib import metadata

    from migrator.sources.chroma import store as chroma_files

    version = metadata.version("chromadb")
    measured = chroma_files.measure_schema_versions()
    assert measured.keys() >= {"embeddings_queue", "metadb", "sysdb"}
    assert version in chroma_files.KNOWN_SCHEMA_VERSIONS, f"add chromadb {version}: {measured}"
    assert chroma_files.KNOWN_SCHEMA_VERSIONS[version] == measured
    chroma_files.installed_schema_versions.cache_clear()
    assert chroma_files.installed_schema_versions(tmp_path) == measured
    assert list(tmp_path.iterdir()) == []  # nothing measured, nothing cached
