"""Verify the vectors: counts per collection, every vector (float32, padding removed), ids, documents, metadata;
self-retrieval and recall@10 against an exact search over the snapshot's vectors."""

from __future__ import annotations

import asyncio
import ctypes
import json
import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from migrator import ledger, vectors_source
from migrator.plan_model import Plan
from migrator.settings import Settings
from migrator.snapshot import Snapshot
from migrator.sources import chroma
from migrator.targets import pgvector as pgv
from migrator.targets import postgres as pgt
from migrator.vectors_load import BATCH, unit_of
from migrator.vectors_plan import spec_of

try:
    _LIBC = ctypes.CDLL("libc.so.6")
    _LIBC.malloc_trim  # noqa: B018 - glibc only
except (OSError, AttributeError):
    _LIBC = None
SAMPLE_PER_COLLECTION = 20
EXACT_LIMIT = 50_000  # recall@10 needs the whole collection in memory for the exact scan
K = 10
SHOW = 10
BUNDLE_CHUNKS = 10_000  # at 50k vectors, main + 2 workers: 25k 661 MB (19.2 s), 10k 523 MB, + malloc_trim 474 MB (25.6 s)


async def check(settings: Settings, plan: Plan, snapshot: Snapshot, *, seed: int | None = None) -> dict | None:
    """Compare every collection; returns the vectors section of the verify report (with its problems).

    The source is read through chromadb's own `get`, independently of the load's direct file reader. Collections go
    in bundles to `--jobs` spawned worker processes, each used for one bundle only: chromadb keeps every HNSW index
    it has read in memory, so memory is bounded by a bundle, not by the store."""
    if not plan.vectors:
        return None
    vectors_source.prepare(settings, snapshot)  # the scratch copy once, before the workers open it
    conn = await pgt.connect(settings.pgvector_url)
    try:
        counts = {r[0]: r[1] for r in await conn.fetch(
            "SELECT collection_name, count(*) FROM document_chunk GROUP BY 1")}
        quarantined = await _quarantined(conn)
    finally:
        await pgt.close_quietly(conn)
    infos = plan.vectors["collections"]
    work = _bundles(infos)
    loop = asyncio.get_running_loop()
    results: dict[str, tuple] = {}
    with ProcessPoolExecutor(max_workers=max(1, min(settings.jobs, len(work) or 1)), max_tasks_per_child=1,
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        done = await asyncio.gather(*(loop.run_in_executor(
            pool, _run_bundle, settings, snapshot, bundle, counts, {unit_of(i["name"]): quarantined.get(
                unit_of(i["name"]), {}) for i in bundle}, seed) for bundle in work))
    for part in done:
        results.update(part)
    out = {"collections": {}, "problems": [], "self_retrieval": {"queries": 0, "hits": 0}, "recall_at_10": None}
    recalls_all: list[float] = []
    for info in infos:  # the report in plan order, whatever finished first
        entry, problems, stats, recalls = results[info["name"]]
        out["collections"][info["name"]] = entry
        out["problems"] += problems
        out["self_retrieval"]["queries"] += stats["queries"]
        out["self_retrieval"]["hits"] += stats["hits"]
        recalls_all += recalls
    extra = set(counts) - {c["name"] for c in infos}
    if extra:
        out["problems"].append(f"document_chunk holds collections not in the source: {sorted(extra)[:SHOW]}")
    out["recall_at_10"] = round(float(np.mean(recalls_all)), 4) if recalls_all else None
    return out


def _bundles(infos: list[dict]) -> list[list[dict]]:
    """Collections grouped up to BUNDLE_CHUNKS chunks (a big one alone), biggest first: few worker start-ups, each
    worker's memory bounded by its bundle."""
    out: list[list[dict]] = []
    current: list[dict] = []
    size = 0
    for info in sorted(infos, key=lambda i: (-i["count"], i["name"])):
        if current and size + info["count"] > BUNDLE_CHUNKS:
            out.append(current)
            current, size = [], 0
        current.append(info)
        size += info["count"]
    return out + ([current] if current else [])


def _run_bundle(settings: Settings, snapshot: Snapshot, bundle: list[dict], counts: dict, quarantined: dict,
                seed: int | None) -> dict[str, tuple]:
    """In a worker process: compare the collections of one bundle."""
    return asyncio.run(_bundle(settings, snapshot, bundle, counts, quarantined, seed))


async def _bundle(settings: Settings, snapshot: Snapshot, bundle: list[dict], counts: dict, quarantined: dict,
                  seed: int | None) -> dict[str, tuple]:
    spec = spec_of(settings)
    client = vectors_source.client(settings, snapshot)
    conn = await pgt.connect(settings.pgvector_url)
    out: dict[str, tuple] = {}
    try:
        await pgv._register(conn)
        for info in bundle:
            problems: list[str] = []
            stats = {"queries": 0, "hits": 0}
            recalls: list[float] = []
            rng = random.Random(None if seed is None else f"{seed}:{info['name']}")
            loaded = _Kept(info["count"] if info["count"] <= EXACT_LIMIT else 0)
            entry = await _collection(conn, client, info, spec, counts, quarantined, problems, loaded)
            entry.update(await _search(conn, info, spec, rng, stats, problems, recalls, loaded))
            out[info["name"]] = (entry, problems, stats, recalls)
    finally:
        await pgt.close_quietly(conn)
    return out


async def _quarantined(conn) -> dict[str, dict[str, str]]:
    rows = await conn.fetch(f"SELECT unit, key, policy FROM {ledger.S}.quarantine WHERE unit LIKE 'vector:%'") \
        if await ledger.exists(conn) else []
    out: dict[str, dict[str, str]] = {}
    for unit, key, policy in rows:
        out.setdefault(unit, {})[json.loads(key)[0]] = policy
    return out


class _Kept:
    """Ids and vectors of a collection kept for the search checks, in one float32 matrix made at the first vector
    (capacity 0: keep nothing)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.ids: list[str] = []
        self._matrix: np.ndarray | None = None

    def add(self, chunk_id: str, vec: np.ndarray) -> None:
        """Keep one vector (a collection has one dimension: plan refuses mixed ones)."""
        if self._matrix is None:
            self._matrix = np.empty((self.capacity, vec.shape[0]), dtype=np.float32)
        if len(self.ids) < self.capacity and vec.shape[0] == self._matrix.shape[1]:
            self._matrix[len(self.ids)] = vec
            self.ids.append(chunk_id)

    def matrix(self) -> np.ndarray:
        """The kept vectors, one row each, in the order of `ids`."""
        return self._matrix[:len(self.ids)] if self._matrix is not None else np.empty((0, 0), dtype=np.float32)


async def _collection(conn, client, info: dict, spec, counts: dict, quarantined: dict, problems: list,
                      loaded: _Kept) -> dict:
    """Every chunk compared; the loaded ids and vectors are kept in `loaded` for the search checks (small ones)."""
    name = info["name"]
    keep = loaded.capacity > 0
    q = quarantined.get(unit_of(name), {})
    source = 0
    bad: list[str] = []
    batches = chroma.iter_batches_client(client, name, batch_size=BATCH)
    pending = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
    while (batch := await pending) is not None:
        _trim()
        pending = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
        source += len(batch.chunks)
        wanted = [c for c in batch.chunks if c.id not in q]
        rows = {r["id"]: r for r in await conn.fetch(
            "SELECT id, vector, collection_name, text, vmetadata::text AS meta FROM document_chunk "
            "WHERE id = ANY($1::text[])", [c.id for c in wanted])}
        bad += [c.id for c in wanted if not _same(c, rows.get(c.id), name, spec)]
        if keep:
            for c in wanted:
                if c.embedding is not None:
                    loaded.add(c.id, np.asarray(c.embedding, dtype=np.float32))
    target = counts.get(name, 0)
    missing = [cid for cid, policy in q.items() if policy == "missing_vector"]
    ok = not bad and source == target + len(q)
    if bad:
        problems.append(f"collection {name}: {len(bad)} chunks differ or are missing: {', '.join(bad[:SHOW])}")
    if source != target + len(q):
        problems.append(f"collection {name}: source {source} != target {target} + quarantined {len(q)}")
    if missing:
        problems.append(f"collection {name}: {len(missing)} chunks had no vector in the source store (not carried; "
                        f"re-index them in HridaAI): {', '.join(missing[:SHOW])}")
    return {"source": source, "target": target, "quarantined": len(q), "differs": bad[:SHOW], "match": ok}


def _trim() -> None:
    """Hand the heap's free pages back to the OS (glibc keeps them: chromadb's reads left a worker 60 MB larger
    than what it still held after one 12k-vector collection)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _same(chunk, row, name: str, spec) -> bool:
    if row is None or row["collection_name"] != name:
        return False
    got = np.asarray(row["vector"].to_numpy() if hasattr(row["vector"], "to_numpy") else row["vector"],
                     dtype=np.float32)
    src = np.asarray(chunk.embedding, dtype=np.float32)
    d = src.shape[0]
    if got.shape[0] != spec.dimension or np.any(got[d:]):
        return False
    equal = np.allclose(got[:d], src, rtol=1e-3, atol=1e-4) if spec.halfvec else np.array_equal(got[:d], src)
    if not equal:
        return False
    if row["text"] != pgv.clean_text(chunk.document)[0]:
        return False
    meta = pgv.to_vmetadata(chunk.metadata)[0]
    return (json.loads(row["meta"]) if row["meta"] else None) == (json.loads(meta) if meta else None)


async def _search(conn, info: dict, spec, rng, stats: dict, problems: list, recalls: list, loaded: _Kept) -> dict:
    """Self-retrieval (the chunk first at distance ~0) and recall@10 vs an exact cosine scan (of what was loaded)."""
    name = info["name"]
    ids, matrix = loaded.ids, loaded.matrix()
    if not ids:
        return {"self_retrieval": None, "recall_at_10": None}
    norms = np.maximum(np.linalg.norm(matrix, axis=1), 1e-30)  # no normalised copy: memory is one matrix
    picks = rng.sample(range(len(ids)), min(SAMPLE_PER_COLLECTION, len(ids)))
    hits, local = 0, []
    for i in picks:
        query = pgv.pad(matrix[i], spec.dimension)
        rows = await conn.fetch("SELECT id, vector <=> $1 AS d FROM document_chunk WHERE collection_name = $2 "
                                "ORDER BY vector <=> $1 LIMIT $3", _param(query, spec), name, K)
        exact = 1.0 - (matrix @ matrix[i]) / (norms * norms[i])
        hits += bool(rows) and (rows[0]["id"] == ids[i] or rows[0]["d"] < 1e-6)
        kth = np.sort(exact)[min(K, len(ids)) - 1]
        allowed = {ids[j] for j in np.nonzero(exact <= kth + 1e-6)[0]}
        local.append(sum(r["id"] in allowed for r in rows) / min(K, len(ids)))
    stats["queries"] += len(picks)
    stats["hits"] += hits
    if hits < len(picks):
        problems.append(f"collection {name}: self-retrieval {hits}/{len(picks)}")
    recalls += local
    return {"self_retrieval": f"{hits}/{len(picks)}", "recall_at_10": round(float(np.mean(local)), 4)}


def _param(vec: np.ndarray, spec):
    from pgvector import HalfVector, Vector

    return HalfVector(vec.astype(np.float16)) if spec.halfvec else Vector(vec)
