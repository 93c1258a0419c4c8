"""Verify the vectors: counts per collection, every vector (float32, padding removed), ids, documents, metadata;
self-retrieval and recall@10 against an exact search over the snapshot's vectors."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import random
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from migrator import ledger
from migrator.context import RunContext
from migrator.convert.vectors import loaded_values
from migrator.parallel import spawn_pool
from migrator.settings import Settings
from migrator.snapshot import Snapshot
from migrator.sources.chroma import client as chroma, direct as chroma_direct
from migrator.sources.chroma.client import CollectionInfo
from migrator.targets import pgvector as pgv, postgres as pgt
from migrator.vectors import source as vectors_source
from migrator.vectors.load import BATCH, unit_of

try:
    _LIBC = ctypes.CDLL("libc.so.6")
    _LIBC.malloc_trim  # noqa: B018 - glibc only
except (OSError, AttributeError):
    _LIBC = None
SAMPLE_PER_COLLECTION = 20
EXACT_TIES = 20  # rows beyond the 10th the exact scan returns, for ties at the 10th distance
K = 10
SEARCH_RECALL_WARN = 0.9  # recall@10 through HridaAI's statement below this, per collection: a WARNING
SHOW = 10
BUDGET_CHUNKS = 30_000  # chunks read by all vector-verify workers at once (see _Budget)
BUNDLE_CHUNKS = 10_000  # at 50k vectors, main + 2 workers: 25k 661 MB (19.2 s), 10k 523 MB, + malloc_trim 474 MB (25.6 s)
COST_PER_COLLECTION = 200  # a collection's fixed verify cost in chunk-equivalents (queries, sample), for balancing
SEARCH_QUERIES = 1000  # sampled search queries over the whole store, about (see queries_per_collection)
# ... of which this many, about, also go through HridaAI's own statement (at least one per collection): the planner
# gives it the vector index with iterative scans, ~6 ms a query on 33k vectors against ~0.5 ms for the exact one, so
# 1,000 of them were most of verify's time on a 300-collection store
HRIDAAI_SEARCH_QUERIES = 250
CROSS_CHECK_COLLECTIONS = 8  # collections read again through chromadb (seeded), compared chunk by chunk
CROSS_CHECK_CHUNKS = 20_000  # ... at most this many chunks in all


async def check(ctx: RunContext, *, seed: int | None = None, executor: Executor | None = None) -> dict | None:
    """Compare every collection; returns the vectors section of the verify report (with its problems).

    The source is read from the snapshot's files (chroma_direct: segment files and the embeddings queue, replayed as
    chromadb does) when that reader knows the store; a seeded sample of collections is also read through chromadb's
    own `get` in a process of its own and compared chunk by chunk with it, so the proof does not rest on the
    load's reader alone. Collections go in bundles to `--jobs` spawned worker processes (`executor`'s, when given:
    the verify's pool, shared with the tables). A store the direct reader
    does not know is read through chromadb, which keeps every HNSW index it has read in memory: then bundles are
    small and the workers together hold at most BUDGET_CHUNKS (a bigger collection is read alone)."""
    settings, plan, snapshot = ctx.settings, ctx.plan, ctx.snapshot
    if not plan.vectors:
        return None
    direct = _direct_readable(settings, snapshot)
    if not direct:
        vectors_source.prepare(settings, snapshot)  # the scratch copy once, before the workers open it
    conn = await pgt.connect(settings.pgvector_url)
    try:
        counts = {r[0]: r[1] for r in await conn.fetch(
            "SELECT collection_name, count(*) FROM document_chunk GROUP BY 1")}
        quarantined = await _quarantined(conn)
        setup = await pgv.search_setup(conn)
    finally:
        await pgt.close_quietly(conn)
    infos = plan.vectors.collections
    workers = max(1, settings.jobs)
    work = _balanced(infos, workers) if direct else _bundles(infos)
    nonempty = sum(1 for i in infos if i.count)
    per_collection = queries_per_collection(nonempty)
    per_collection_hridaai = queries_per_collection(nonempty, HRIDAAI_SEARCH_QUERIES)
    loop = asyncio.get_running_loop()
    results: dict[str, Found] = {}

    def _job(bundle: list[CollectionInfo]) -> BundleJob:
        return BundleJob(settings, snapshot, plan.vectors.spec, bundle, counts,
                         {unit_of(i.name): quarantined.get(unit_of(i.name), {}) for i in bundle}, seed, per_collection,
                         per_collection_hridaai)

    if direct:  # memory follows the batches: one bundle per worker, the workers kept; chromadb in a process apart
        with contextlib.ExitStack() as stack:
            pool = executor or stack.enter_context(spawn_pool(min(workers, len(work)) or 1))
            apart = stack.enter_context(spawn_pool(1, max_tasks_per_child=1))
            crossed = loop.run_in_executor(apart, w_cross_check,
                                           CrossCheckJob(settings, snapshot, cross_check_sample(infos, seed)))
            done = await asyncio.gather(*(loop.run_in_executor(pool, w_run_bundle, _job(b)) for b in work))
            cross = await crossed
    else:
        gate = _Budget(workers, BUDGET_CHUNKS)
        cross = None
        with spawn_pool(min(workers, len(work)) or 1, max_tasks_per_child=1) as pool:
            async def run(bundle: list[CollectionInfo]) -> dict[str, Found]:
                async with gate.taken(sum(i.count for i in bundle)):
                    return await loop.run_in_executor(pool, w_run_bundle, _job(bundle))

            done = await asyncio.gather(*(run(bundle) for bundle in work))
    for part in done:
        results.update(part)
    out = _report(infos, results, setup)
    out["queries_per_collection"] = per_collection
    out["hridaai_queries_per_collection"] = per_collection_hridaai
    out["source_reader"] = "files (chromadb's resolution, cross-checked)" if direct else "chromadb"
    if cross is not None:
        out["cross_check"] = cross
        if cross["differs"]:
            out["problems"].append(
                f"the direct Chroma reader and chromadb disagree on {len(cross['differs'])} chunks "
                f"({', '.join(cross['differs'][:SHOW])}): a bug of this tool, please report it with the store's "
                "chromadb version; the data loaded from these collections cannot be trusted")
    extra = set(counts) - {c.name for c in infos}
    if extra:
        out["problems"].append(f"document_chunk holds collections not in the source: {sorted(extra)[:SHOW]}")
    return out


def _direct_readable(settings: Settings, snapshot: Snapshot) -> bool:
    """Whether the snapshot's Chroma store is one the direct reader knows."""
    if vectors_source.kind(settings, snapshot) != "snapshot":
        return False
    store = chroma_direct.open_store(snapshot.vector_path)
    if store is None:
        return False
    store.close()
    return True


def queries_per_collection(collections: int, total: int = SEARCH_QUERIES) -> int:
    """Sampled search queries per collection: SAMPLE_PER_COLLECTION, fewer when there are many collections (about
    `total` in all, at least one each), so verify's cost per collection stays small."""
    return max(1, min(SAMPLE_PER_COLLECTION, -(-total // max(1, collections))))


def cross_check_sample(infos: list[CollectionInfo], seed: int | None) -> list[str]:
    """Collections (seeded draw) read again through chromadb: up to CROSS_CHECK_COLLECTIONS, CROSS_CHECK_CHUNKS
    chunks in all (a bigger collection is skipped)."""
    names = sorted((i.count, i.name) for i in infos if i.count)
    random.Random(seed).shuffle(names)
    picked, total = [], 0
    for count, name in names:
        if len(picked) < CROSS_CHECK_COLLECTIONS and total + count <= CROSS_CHECK_CHUNKS:
            picked.append(name)
            total += count
    return sorted(picked)


def _report(infos: list[CollectionInfo], results: dict[str, Found], setup: dict) -> dict:
    """The vectors section: per collection in plan order, the totals, and HridaAI's search quality with a WARNING
    (its cause and remedy) where it is below SEARCH_RECALL_WARN."""
    out = {"collections": {}, "problems": [], "warnings": [], "self_retrieval": {"queries": 0, "hits": 0}}
    recalls, searched, latencies = [], [], []
    for info in infos:
        found = results[info.name]
        out["collections"][info.name] = found.entry
        out["problems"] += found.problems
        out["self_retrieval"]["queries"] += found.queries
        out["self_retrieval"]["hits"] += found.hits
        recalls += found.recalls
        searched += found.search_recalls
        latencies += found.latencies_ms
    out["recall_at_10"] = round(float(np.mean(recalls)), 4) if recalls else None
    out["search"] = {**setup, "recall_at_10": round(float(np.mean(searched)), 4) if searched else None,
                     "median_ms": round(float(np.median(latencies)), 2) if latencies else None}
    low = sorted(n for n, c in out["collections"].items()
                 if (c.get("hridaai_recall_at_10") or 1.0) < SEARCH_RECALL_WARN)
    if low:
        out["warnings"].append(_search_warning(out["search"], low))
    return out


def _search_warning(search: dict, low: list[str]) -> str:
    """Why HridaAI's searches miss neighbours here, and what to do."""
    cause = (f"index {search['method']} ({search['index']}), pgvector {search['pgvector']}, "
             f"ivfflat.probes={search['ivfflat.probes']}, hnsw.ef_search={search['hnsw.ef_search']}")
    remedy = ("`migrate tune-search` sets the smallest ivfflat.probes reaching recall 0.95 as the database's default "
              "(ALTER DATABASE <db> SET ivfflat.probes = N, which HridaAI's sessions inherit; `--reset` undoes it), "
              "or use PGVECTOR_INDEX_METHOD=hnsw" if search["method"] == "ivfflat" else
              "`migrate tune-search` raises hnsw.ef_search for the database (ALTER DATABASE <db> SET hnsw.ef_search)")
    return (f"HridaAI's own search statement finds {search['recall_at_10']} of the exact top 10 overall; below "
            f"{SEARCH_RECALL_WARN} in {len(low)} collections ({', '.join(low[:SHOW])}): {cause}. Remedy: {remedy}")


class _Budget:
    """At most `workers` bundles at once, together at most `chunks` chunks; a bundle bigger than that (one big
    collection) runs alone. Worker memory follows the chunks it reads (chromadb keeps a collection's whole HNSW
    index), so this bounds the processes' sum, not just each one."""

    def __init__(self, workers: int, chunks: int) -> None:
        self.workers = workers
        self.chunks = chunks
        self.running: list[int] = []
        self.changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def taken(self, size: int):
        """Wait until `size` chunks fit, hold them while the body runs."""
        async with self.changed:
            await self.changed.wait_for(lambda: not self.running or (
                len(self.running) < self.workers and sum(self.running) + size <= self.chunks))
            self.running.append(size)
        try:
            yield
        finally:
            async with self.changed:
                self.running.remove(size)
                self.changed.notify_all()


def _bundles(infos: list[CollectionInfo]) -> list[list[CollectionInfo]]:
    """Collections grouped up to BUNDLE_CHUNKS chunks (a big one alone), biggest first: few worker start-ups, each
    worker's memory bounded by its bundle."""
    out: list[list[CollectionInfo]] = []
    current: list[CollectionInfo] = []
    size = 0
    for info in sorted(infos, key=lambda i: (-i.count, i.name)):
        if current and size + info.count > BUNDLE_CHUNKS:
            out.append(current)
            current, size = [], 0
        current.append(info)
        size += info.count
    return out + ([current] if current else [])


def _balanced(infos: list[CollectionInfo], workers: int) -> list[list[CollectionInfo]]:
    """Collections in 2 x workers bundles of about equal cost (chunks + a fixed cost per collection), biggest first:
    read from the files, a worker's memory follows its batches, not its bundle, so few bundles, few start-ups."""
    n = max(1, min(2 * workers, sum(1 for i in infos if i.count) or 1))
    bundles: list[list[CollectionInfo]] = [[] for _ in range(n)]
    cost = [0] * n
    for info in sorted(infos, key=lambda i: (-i.count, i.name)):
        k = cost.index(min(cost))
        bundles[k].append(info)
        cost[k] += info.count + COST_PER_COLLECTION
    return [b for b in bundles if b]


@dataclass(frozen=True)
class BundleJob:
    """What a verify worker needs for one bundle of collections (sent to it by pickle)."""

    settings: Settings
    snapshot: Snapshot
    spec: pgv.VectorTableSpec
    collections: list[CollectionInfo]
    counts: dict[str, int]  # collection -> rows in document_chunk
    quarantined: dict[str, dict[str, str]]  # unit -> {chunk id -> policy}
    seed: int | None
    queries: int = SAMPLE_PER_COLLECTION  # sampled search queries per collection
    hridaai_queries: int = SAMPLE_PER_COLLECTION  # ... of which also through HridaAI's statement (the first ones)


@dataclass
class Found:
    """What the checks of one collection found: its report entry, problems, and the search figures."""

    entry: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    queries: int = 0
    hits: int = 0
    recalls: list[float] = field(default_factory=list)
    search_recalls: list[float] = field(default_factory=list)  # through HridaAI's own search statement
    latencies_ms: list[float] = field(default_factory=list)


def w_run_bundle(job: BundleJob) -> dict[str, Found]:
    """In a worker of verify's pool (a process; with --jobs 1 its one thread): compare the collections of one bundle."""
    return asyncio.run(_bundle(job))


async def _bundle(job: BundleJob) -> dict[str, Found]:
    source = vectors_source.batches(job.settings, job.snapshot)
    salt = f"{random.random() if job.seed is None else job.seed}:"  # which chunks are drawn: repeatable with --seed
    conn = await pgt.connect(job.settings.pgvector_url)
    out: dict[str, Found] = {}
    try:
        await pgv.register(conn)
        for info in job.collections:
            found = out[info.name] = Found()
            sample = await _Sample.drawn(conn, info.name, salt, job.queries)
            found.entry = await _compare_collection(conn, source, job, info, found, sample)
            found.entry.update(await _search(conn, job.spec, info, found, sample, job.hridaai_queries))
    finally:
        await pgt.close_quietly(conn)
        source.close()
    return out


async def _quarantined(conn) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for unit, key, policy in await ledger.vector_quarantine(conn):
        out.setdefault(unit, {})[json.loads(key)[0]] = policy
    return out


class _Sample:
    """The queries of the search checks (SAMPLE_PER_COLLECTION loaded chunks, drawn from the target before the
    collection is read) and, for each, the K nearest of the snapshot's vectors, kept while the collection streams
    by: an exact scan that holds K + EXACT_TIES distances per query, never the collection."""

    def __init__(self, ids: list[str], queries: np.ndarray) -> None:
        self.ids = ids
        self.queries = queries  # one row per query, float32, padding removed later per batch
        self.norms = np.maximum(np.linalg.norm(queries, axis=1), 1e-30)
        self.best: list[list[tuple[float, str]]] = [[] for _ in ids]

    @classmethod
    async def drawn(cls, conn, name: str, salt: str, n: int) -> _Sample:
        """`n` pseudo-random loaded chunks of the collection (the same for the same salt) and their vectors."""
        rows = await conn.fetch("SELECT id, vector FROM document_chunk WHERE collection_name = $1 "
                                "ORDER BY md5($2 || id), id LIMIT $3", name, salt, n)
        if not rows:
            return cls([], np.empty((0, 0), dtype=np.float32))
        return cls([r["id"] for r in rows], np.stack([_array(r["vector"]) for r in rows]))

    def offer(self, ids: list[str], vectors: list) -> None:
        """Distances from every query to a batch of source vectors; keep each query's nearest."""
        keep = [(i, v) for i, v in zip(ids, vectors) if v is not None]
        if not self.ids or not keep:
            return
        batch = np.stack([np.asarray(v, dtype=np.float32) for _, v in keep])
        q = self.queries[:, :batch.shape[1]]
        dist = 1.0 - (q @ batch.T) / (self.norms[:, None] * np.maximum(np.linalg.norm(batch, axis=1), 1e-30))
        limit = K + EXACT_TIES
        for row, best in zip(dist, self.best):
            near = np.argsort(row, kind="stable")[:limit]
            best += [(float(row[j]), keep[j][0]) for j in near]
            best.sort()
            del best[limit:]


async def _compare_collection(conn, chunks: vectors_source.BatchSource, job: BundleJob, info: CollectionInfo,
                              found: Found, sample: _Sample) -> dict:
    """Every chunk compared; the sampled loaded chunks are kept in `sample` for the search checks."""
    name, spec, problems = info.name, job.spec, found.problems
    q = job.quarantined.get(unit_of(name), {})
    source = 0
    bad: list[str] = []
    batches = chunks.open(name, start=0, batch_size=BATCH)
    pending = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
    while (batch := await pending) is not None:
        if chunks.read_by.get(name) != "files":
            _trim()
        pending = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
        source += len(batch.chunks)
        wanted = [c for c in batch.chunks if c.id not in q]
        rows = {r["id"]: r for r in await conn.fetch(
            "SELECT id, vector, collection_name, text, vmetadata::text AS meta FROM document_chunk "
            "WHERE id = ANY($1::text[])", [c.id for c in wanted])}
        bad += [c.id for c in wanted if not _same(c, rows.get(c.id), name, spec)]
        sample.offer([c.id for c in wanted], [c.embedding for c in wanted])
    target = job.counts.get(name, 0)
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


def _array(value) -> np.ndarray:
    """A vector/halfvec value read from PostgreSQL as float32."""
    return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, dtype=np.float32)


def _same(chunk, row, name: str, spec) -> bool:
    if row is None or row["collection_name"] != name:
        return False
    got = _array(row["vector"])
    src = np.asarray(chunk.embedding, dtype=np.float32)
    d = src.shape[0]
    if got.shape[0] != spec.dimension or np.any(got[d:]):
        return False
    equal = np.allclose(got[:d], src, rtol=1e-3, atol=1e-4) if spec.halfvec else np.array_equal(got[:d], src)
    if not equal:
        return False
    text, meta = loaded_values(chunk)
    if row["text"] != text:
        return False
    return (json.loads(row["meta"]) if row["meta"] else None) == (json.loads(meta) if meta else None)


async def _search(conn, spec: pgv.VectorTableSpec, info: CollectionInfo, found: Found, sample: _Sample,
                  hridaai_queries: int) -> dict:
    """Self-retrieval (the chunk's vector finds that chunk first, at distance ~0, as HridaAI searches) and recall@10
    against the exact scan of the snapshot's vectors made while they streamed by."""
    name = info.name
    if not sample.ids:
        return {"self_retrieval": None, "recall_at_10": None}
    hits, local = 0, []
    for chunk_id, vec, best in zip(sample.ids, sample.queries, sample.best):
        rows = await conn.fetch("SELECT id, vector <=> $1 AS d FROM document_chunk WHERE collection_name = $2 "
                                "ORDER BY vector <=> $1 LIMIT $3", _param(vec, spec), name, K)
        hits += bool(rows) and (rows[0]["id"] == chunk_id or rows[0]["d"] < 1e-6)
        want = min(K, len(best))
        kth = best[want - 1][0] if want else 0.0
        allowed = {cid for d, cid in best if d <= kth + 1e-6}
        local.append(sum(r["id"] in allowed for r in rows) / want if want else 1.0)
    found.queries += len(sample.ids)
    found.hits += hits
    if hits < len(sample.ids):
        found.problems.append(f"collection {name}: self-retrieval {hits}/{len(sample.ids)}")
    found.recalls += local
    searched = await _search_as_hridaai(conn, spec, name, sample, found, hridaai_queries)
    return {"self_retrieval": f"{hits}/{len(sample.ids)}", "recall_at_10": round(float(np.mean(local)), 4),
            "hridaai_recall_at_10": round(float(np.mean(searched)), 4)}


async def _search_as_hridaai(conn, spec: pgv.VectorTableSpec, name: str, sample: _Sample, found: Found,
                             n: int) -> list[float]:
    """recall@10 of the first `n` sampled queries through HridaAI's own statement against the exact top 10 of the
    snapshot's vectors (ties at the 10th distance count), and its latency."""
    out = []
    for vec, best in itertools.islice(zip(sample.queries, sample.best), n):
        t0 = time.perf_counter()
        rows = await pgv.search_as_hridaai(conn, spec, name, vec, K)
        found.latencies_ms.append((time.perf_counter() - t0) * 1000)
        out.append(_recall([cid for cid, _ in rows], best))
    found.search_recalls += out
    return out


def _recall(got: list[str], best: list[tuple[float, str]]) -> float:
    """Share of the exact top K found (a chunk tied with the K-th counts)."""
    want = min(K, len(best))
    if not want:
        return 1.0
    kth = best[want - 1][0]
    allowed = {cid for d, cid in best if d <= kth + 1e-6}
    return sum(cid in allowed for cid in got) / want


def _param(vec: np.ndarray, spec):
    from pgvector import HalfVector, Vector

    return HalfVector(vec.astype(np.float16)) if spec.halfvec else Vector(vec)


@dataclass(frozen=True)
class CrossCheckJob:
    """Collections to read both through chromadb and through the direct reader (sent to a worker by pickle)."""

    settings: Settings
    snapshot: Snapshot
    collections: list[str]


def w_cross_check(job: CrossCheckJob) -> dict:
    """In a worker process of its own (chromadb's memory goes with it): each collection read through chromadb's get
    (on a scratch copy of chroma.sqlite3 and those collections' segment folders) and through the direct reader,
    compared chunk by chunk: ids, vector bytes, documents, metadata with their types."""
    out: dict = {"collections": len(job.collections), "chunks": 0, "differs": []}
    if not job.collections:
        return out
    store = chroma_direct.open_store(job.snapshot.vector_path)
    if store is None:
        return {**out, "collections": 0}
    client = vectors_source.check_client(job.settings, job.snapshot, store, job.collections)
    try:
        for name in job.collections:
            reader = store.reader(name, fallback_col=client.get_collection(name, embedding_function=None))
            if reader is None:
                continue  # the load read it through chromadb too: nothing to cross-check
            theirs = (c for b in chroma.iter_batches_client(client, name, batch_size=BATCH) for c in b.chunks)
            mine = (c for b in reader.iter_batches(batch_size=BATCH) for c in b.chunks)
            for a, b in itertools.zip_longest(theirs, mine):
                out["chunks"] += 1
                if not _same_chunk(a, b):
                    out["differs"].append(f"{name}/{(a or b).id}")
    finally:
        store.close()
        vectors_source.drop_check_copy(job.settings)
    return out


def _same_chunk(a, b) -> bool:
    """Two reads of one chunk agree exactly (a metadata value's type included: True is not 1)."""
    if a is None or b is None or a.id != b.id or a.document != b.document:
        return False
    if (a.embedding is None) != (b.embedding is None):
        return False
    if a.embedding is not None and a.embedding.tobytes() != b.embedding.tobytes():
        return False
    typed = [None if m is None else {k: (type(v), repr(v)) for k, v in m.items()} for m in (a.metadata, b.metadata)]
    return typed[0] == typed[1]
