"""Vectors end to end: padding of 384-d and 768-d, a too-long collection, id collisions, kill + resume, HTTP source,
halfvec refusal — real chromadb stores, real pgvector."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from conftest import MIGRATE, ROOT, SMALL, query, run_cli, stopped_at_failpoint


def make_store(path: Path, collections: dict[str, tuple[int, int]], *, shared_ids: tuple[str, ...] = (),
               seed: int = 7) -> None:
    """A real Chroma store: name -> (count, dimension); shared_ids appear in every collection."""
    import chromadb
    from chromadb.config import Settings

    rng = np.random.default_rng(seed)
    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    for name, (count, dim) in collections.items():
        col = client.get_or_create_collection(name, metadata={"hnsw:space": "cosine"}, embedding_function=None)
        ids = [f"{name}-{i}" for i in range(count - len(shared_ids))] + list(shared_ids)
        for start in range(0, count, 500):
            part = ids[start:start + 500]
            col.add(ids=part, embeddings=rng.standard_normal((len(part), dim)).astype(np.float32),
                    documents=[f"chunk {i} of {name}" for i in part],
                    metadatas=[{"file_id": name, "start_index": k, "ratio": 0.5, "ok": True} for k in range(len(part))])
    del client


def data_dir_with(tmp_path: Path, collections: dict, **kw) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(SMALL / "hridaai.db", data / "hridaai.db")
    make_store(data / "vector_db", collections, **kw)
    return data


def args(data: Path, work: Path, target: str) -> list[str]:
    return ["--data-dir", str(data), "--work-dir", str(work), "--target", target, "--log-format", "none"]


def test_384_and_768_padded_and_exact_and_collisions_quarantined(target_url, tmp_path):
    data = data_dir_with(tmp_path, {"file-a": (300, 384), "file-b": (60, 768), "col-c": (20, 384)},
                         shared_ids=("dup-1", "dup-2"))
    common = args(data, tmp_path / "w", target_url)
    plan = run_cli("plan", *common, "--json")
    assert plan.returncode == 0, plan.stderr
    doc = json.loads(plan.stdout)
    dims = {c["name"]: c["dimension"] for c in doc["vectors"]["collections"]}
    assert dims == {"col-c": 384, "file-a": 384, "file-b": 768}
    collision = [c for c in doc["checks"] if c["code"] == "chunk-id-collision"]
    assert collision and "dup-1" in json.dumps(collision)
    assert run_cli("run", *common).returncode == 0
    verify = run_cli("verify", *common, "--json")
    assert verify.returncode == 0, verify.stdout[-3000:]
    vec = json.loads(verify.stdout)["vectors"]
    assert vec["recall_at_10"] == 1.0 and vec["self_retrieval"]["hits"] == vec["self_retrieval"]["queries"]
    # read from the files, and every collection (few, small) read again through chromadb and found equal
    assert vec["source_reader"].startswith("files") and vec["queries_per_collection"] == 20
    assert vec["cross_check"] == {"collections": 3, "chunks": 380, "differs": []}
    assert not (tmp_path / "w" / "chroma-check").exists()  # the cross-check's copy is gone, and no full copy made
    assert not (tmp_path / "w" / "chroma-read").exists()
    # dup ids: kept by the first collection (by name), quarantined in the others
    owners = query(target_url, "SELECT id, collection_name FROM document_chunk WHERE id LIKE 'dup-%' ORDER BY id")
    assert [tuple(r) for r in owners] == [("dup-1", "col-c"), ("dup-2", "col-c")]
    q = query(target_url, "SELECT unit, key FROM hridaai_migrate.quarantine WHERE policy = 'chunk_id_collision'")
    assert len(q) == 4
    dims_b = query(target_url, "SELECT DISTINCT vector_dims(vector) FROM document_chunk WHERE collection_name = 'file-b'")
    assert [r[0] for r in dims_b] == [1536]
    tail = query(target_url, "SELECT count(*) FROM document_chunk WHERE collection_name = 'file-b' AND "
                             "(vector::real[])[769:1536] <> array_fill(0::real, ARRAY[768])")[0][0]
    assert tail == 0  # zero padding after the 768 real dimensions
    dim = query(target_url, "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'document_chunk'::regclass "
                            "AND attname = 'vector'")[0][0]
    assert dim == 1536
    names = {r[0] for r in query(target_url, "SELECT indexname FROM pg_indexes WHERE tablename = 'document_chunk'")}
    assert {"idx_document_chunk_collection_name", "idx_document_chunk_text_search"} <= names  # built after the load


def test_collection_longer_than_the_configured_length_is_refused(target_url, tmp_path):
    data = data_dir_with(tmp_path, {"file-big": (5, 2048), "file-a": (5, 384)})
    common = args(data, tmp_path / "w", target_url)
    plan = run_cli("plan", *common)
    assert plan.returncode == 4
    assert "PGVECTOR_INITIALIZE_MAX_VECTOR_LENGTH to at least 2048" in plan.stdout
    run = run_cli("run", *common)
    assert run.returncode == 4
    assert query(target_url, "SELECT count(*) FROM pg_tables WHERE tablename = 'chat'")[0][0] == 0


def test_halfvec_on_old_pgvector_is_refused_with_the_setting(target_url, tmp_path):
    data = data_dir_with(tmp_path, {"file-a": (5, 384)})
    plan = run_cli("plan", *args(data, tmp_path / "w", target_url), env={"PGVECTOR_USE_HALFVEC": "true"})
    version = query(target_url, "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")[0][0]
    if tuple(int(x) for x in version.split(".")[:2]) >= (0, 7):
        assert plan.returncode == 0
    else:
        assert plan.returncode == 4 and "PGVECTOR_USE_HALFVEC" in plan.stdout


def test_sigkill_during_vector_load_then_resume_exactly_once(target_url, tmp_path):
    data = data_dir_with(tmp_path, {f"file-{i}": (2500, 384) for i in range(3)})
    common = args(data, tmp_path / "w", target_url)
    # stopped (SIGSTOP) right after a vector batch committed, however fast the machine, then killed there
    proc = subprocess.Popen(MIGRATE + ["run", *common, "--log-format", "json"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, HRIDAAI_MIGRATE_STOP_AT="vector-batch"))
    assert stopped_at_failpoint(proc), proc.communicate()[1][-2000:]
    assert query(target_url, "SELECT count(*) FROM hridaai_migrate.batch WHERE unit LIKE 'vector:%'")[0][0] >= 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert query(target_url, "SELECT count(*) FROM document_chunk")[0][0] < 7500  # killed mid-load
    done = run_cli("run", "--resume", *common)
    assert done.returncode == 0, done.stderr
    assert query(target_url, "SELECT count(*) FROM document_chunk")[0][0] == 7500
    verify = run_cli("verify", *common)
    assert verify.returncode == 0, verify.stdout[-3000:]


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def test_sigkill_between_groups_of_small_collections_then_resume_exactly_once(target_url, tmp_path):
    """Small collections load in groups (one COPY, one transaction, a ledger unit each): killed right after the first
    group committed (the run stops itself there: no timer), a resume loads every other collection once."""
    sizes = {f"file-{i:02d}": (10 + 13 * i, 16) for i in range(24)}  # 10 .. 309 chunks: several groups of <= 1000
    data = data_dir_with(tmp_path, sizes)
    common = args(data, tmp_path / "w", target_url)
    env = dict(os.environ, HRIDAAI_MIGRATE_STOP_AT="vector-group")
    json_log = [a if a != "none" else "json" for a in common]  # the failpoint follows the JSON progress events
    proc = subprocess.Popen(MIGRATE + ["run", "--jobs", "1", *json_log], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while proc.poll() is None and not _stopped(proc.pid) and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its first group committed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_units = query(target_url, "SELECT unit FROM hridaai_migrate.unit WHERE done AND unit LIKE 'vector:%'")
    first = {r[0].removeprefix("vector:") for r in done_units}
    assert 1 < len(first) < len(sizes)  # one group: several collections, not all
    loaded = query(target_url, "SELECT collection_name, count(*) FROM document_chunk GROUP BY 1")
    assert {r[0]: r[1] for r in loaded} == {n: sizes[n][0] for n in first}  # whole collections, only those

    resumed = run_cli("run", "--resume", *common)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    total = query(target_url, "SELECT count(*) FROM document_chunk")[0][0]
    assert total == sum(n for n, _ in sizes.values())
    batches = query(target_url, "SELECT unit, count(*) FROM hridaai_migrate.batch WHERE unit LIKE 'vector:%' GROUP BY 1")
    assert {r[0] for r in batches} == {f"vector:{n}" for n in sizes} and {r[1] for r in batches} == {1}
    verify = run_cli("verify", *common)
    assert verify.returncode == 0, verify.stdout[-3000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chroma_http_source(target_url, tmp_path):
    store = tmp_path / "served"
    make_store(store, {"file-a": (120, 384), "user-memory-u1": (4, 384)})
    port = _free_port()
    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent))
    server = subprocess.Popen([chroma, "run", "--path", str(store), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        data = tmp_path / "data"
        data.mkdir()
        shutil.copy(SMALL / "hridaai.db", data / "hridaai.db")
        env = {"CHROMA_HTTP_HOST": "127.0.0.1", "CHROMA_HTTP_PORT": str(port)}
        common = args(data, tmp_path / "w", target_url)
        run = run_cli("run", *common, env=env)
        assert run.returncode == 0, run.stderr
        verify = run_cli("verify", *common, "--json", env=env)
        assert verify.returncode == 0, verify.stdout[-2000:]
        assert json.loads(verify.stdout)["vectors"]["collections"]["file-a"]["target"] == 120
    finally:
        server.terminate()
        server.wait(10)


def test_verify_finds_a_changed_vector_text_and_a_missing_chunk(target_url, tmp_path):
    data = data_dir_with(tmp_path, {"file-a": (1200, 16), "file-b": (40, 16)})  # file-a: in the HNSW files
    common = args(data, tmp_path / "w", target_url)
    assert run_cli("run", *common).returncode == 0
    assert run_cli("verify", *common).returncode == 0
    query(target_url, "UPDATE document_chunk SET vector = (SELECT vector FROM document_chunk WHERE id = 'file-a-9') "
                      "WHERE id = 'file-a-8'")
    query(target_url, "DELETE FROM document_chunk WHERE id = 'file-a-7'")
    query(target_url, "UPDATE document_chunk SET text = text || 'x' WHERE id = 'file-b-3'")
    verify = run_cli("verify", *common, "--json")
    assert verify.returncode == 3, verify.stdout[-2000:]
    report = json.loads(verify.stdout)["vectors"]
    a, b = report["collections"]["file-a"], report["collections"]["file-b"]
    assert not a["match"] and set(a["differs"]) == {"file-a-7", "file-a-8"} and a["target"] == 1199
    assert not b["match"] and b["differs"] == ["file-b-3"]
    assert any("file-a" in p and "differ" in p for p in report["problems"])


def test_verify_bundles_bound_each_worker():
    from migrator.sources.chroma.client import CollectionInfo
    from migrator.vectors.verify import BUNDLE_CHUNKS, _bundles

    infos = [CollectionInfo(f"c{i}", f"id{i}", n, 384, "cosine")
             for i, n in enumerate([BUNDLE_CHUNKS * 2, 10, BUNDLE_CHUNKS - 5, 3, 7])]
    got = _bundles(infos)
    assert [[i.name for i in b] for b in got] == [["c0"], ["c2"], ["c1", "c4", "c3"]]
    assert sorted(i.name for b in got for i in b) == sorted(i.name for i in infos)
    assert all(len(b) == 1 or sum(i.count for i in b) <= BUNDLE_CHUNKS for b in got)


def test_verify_budget_bounds_the_workers_together():
    """Bundles run at most `workers` at once and together within the chunk budget; a bigger one runs alone."""
    import asyncio

    from migrator.vectors.verify import _Budget

    async def scenario():
        gate, seen = _Budget(2, 30), []

        async def bundle(size):
            async with gate.taken(size):
                seen.append(list(gate.running))
                await asyncio.sleep(0.01 * (size % 7 + 1))

        await asyncio.gather(*(bundle(n) for n in [49, 31, 19, 17, 15, 11, 10, 9, 3]))
        return seen

    seen = asyncio.run(scenario())
    assert len(seen) == 9 and all(len(s) <= 2 for s in seen)
    assert all(sum(s) <= 30 or len(s) == 1 for s in seen)
    assert [s for s in seen if 49 in s or 31 in s] == [[49], [31]]
    assert any(len(s) == 2 for s in seen)  # small ones still run two at a time
