"""Generate (and cache) a synthetic HridaAI data dir whose ``vector_db/`` is a real Chroma store.

The store is written with chromadb itself (``PersistentClient``, ``collection.add`` in batches of ``ADD_BATCH``), so
it has exactly the layout HridaAI's embedded Chroma leaves: ``chroma.sqlite3`` plus one HNSW segment folder per
collection, ``embeddings_queue`` purged past ``sync_threshold``. ``hridaai.db`` is the real 0.12.4 schema with no
rows but ``alembic_version`` (the relational part is not what this benchmark measures).

Collections, named like HridaAI names them (all ``{"hnsw:space": "cosine"}``):

* ``<knowledge uuid>`` — a knowledge base: chunks of many files (``file_id``/``name``/``hash`` per file), large;
* ``file-<file uuid>`` — one uploaded file's chunks, medium;
* ``user-memory-<user uuid>`` — a user's memories (short texts, ``created_at``/``updated_at`` metadata), small.

Documents are 500–1000 characters of mixed-script text (memories 30–300); chunk metadata as HridaAI's retrieval
pipeline writes it (``name``, ``source``, ``file_id``, ``hash``, ``start_index``, ``created_by``, ``content_type``,
``embedding_config`` as a repr string, ...). Vectors are float32, unit length, clustered around per-collection
centres (so nearest-neighbour search means something). Everything derives from the seed: the same parameters give the
same ids, documents, metadata and vectors (the store's own files carry chromadb's random collection ids and
timestamps, so *they* differ byte-wise; ``content_digest`` reads a store back and hashes what matters).

The **real** profile (``VecParams(profile="real", collections=N)``, ``--profile real``) is shaped like real installs
instead (see ``plan_real``): one ``file-<uuid>`` collection per uploaded file, lognormal sizes (median
``REAL_FILE_MEDIAN`` chunks, most under 500, a long tail), a few knowledge bases whose chunks are copies of some files'
chunks under new chunk ids (HridaAI re-inserts a file's chunks into the knowledge collection), and
``user-memory-<uuid>`` collections of a few memories upserted one at a time. Written in HridaAI's order (a file's
collection, then its copy into its knowledge bases; one ``add`` per file) by a spawned child process per
``REAL_PART_FILES`` files, so that chromadb's per-client memory does not pile up in one process. Collections under
chromadb's ``hnsw:sync_threshold`` (1000) keep their vectors in ``embeddings_queue`` only, as in real installs.

``python -m bench.vector_data --vectors N --collections N`` (or ``--profile real --collections N``) builds one into
the cache without benchmarking.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import random
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from bench import synth

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
VECTOR_GENERATOR_VERSION = 1  # bump when the generated content changes, so stale caches are not reused
ADD_BATCH = 5_000  # below chromadb's max_batch_size (5461 with its SQLite backend)
EMBEDDING_CONFIG = repr({"engine": "", "model": "sentence-transformers/all-MiniLM-L6-v2"})
CONTENT_TYPES = (("pdf", "application/pdf"), ("md", "text/markdown"), ("txt", "text/plain"),
                 ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"))
# The real profile (plan_real); bump REAL_GENERATOR_VERSION when what it generates changes.
REAL_GENERATOR_VERSION = 1
REAL_FILE_MEDIAN = 45  # chunks per uploaded file: lognormal, median 45, sigma REAL_FILE_SIGMA
REAL_FILE_SIGMA = 1.1  # -> ~1.4 % of files over 500 chunks, mean ~82
REAL_FILE_MAX = 12_000  # a file over ADD_BATCH chunks is added in batches, as HridaAI's insert does
REAL_IN_KNOWLEDGE = 0.35  # share of files also added to a knowledge base (a twentieth of those to two)
REAL_MEMORIES = (1, 12)  # memories per user (uniform)
REAL_PART_FILES = 250  # files (with their knowledge-base copies and the memories between them) per child process
# Relative size of a collection by kind (lognormal around these): knowledge bases are big, memories small.
KIND_WEIGHT = {"knowledge": 4.0, "file": 1.0, "memory": 0.05}


PROFILES = ("uniform", "real")


@dataclasses.dataclass(frozen=True)
class VecParams:
    """What to generate; the hash of these (+ generator and chromadb versions) names the cache directory."""

    vectors: int = 200_000  # the uniform profile's total; the real profile derives it from ``collections`` (use 0)
    collections: int = 20
    dim: int = 384
    seed: int = 1
    profile: str = "uniform"  # uniform | real

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile {self.profile!r}: one of {', '.join(PROFILES)}")

    def key(self) -> str:
        """Stable short hash of the parameters, the generator version and the chromadb version."""
        import chromadb

        d = dataclasses.asdict(self)
        if self.profile == "uniform":
            d.pop("profile")  # the uniform profile's keys are what they were before profiles existed
        else:
            d["v_" + self.profile] = REAL_GENERATOR_VERSION
        blob = json.dumps({**d, "v": VECTOR_GENERATOR_VERSION, "chromadb": chromadb.__version__}, sort_keys=True)
        return "vectors-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class CollectionPlan:
    """One collection to generate."""

    index: int
    name: str
    kind: str  # knowledge | file | memory
    count: int


def _kinds(n: int) -> list[str]:
    """A quarter knowledge bases, a fifth memories (at least one of each from 3 collections on), the rest files."""
    if n <= 0:
        return []
    kinds = ["file"] * n
    n_know = max(1, round(n / 4)) if n >= 2 else 0
    n_mem = max(1, round(n / 5)) if n >= 3 else 0
    for i in range(n_know):
        kinds[i] = "knowledge"
    for i in range(n_mem):
        kinds[n - 1 - i] = "memory"
    return kinds


def _split(total: int, weights: list[float]) -> list[int]:
    """``total`` split proportionally to ``weights`` (largest remainders), every part >= 1 when total allows."""
    if not weights:
        return []
    s = sum(weights)
    raw = [total * w / s for w in weights]
    parts = [max(1, math.floor(r)) if total >= len(weights) else math.floor(r) for r in raw]
    diff = total - sum(parts)
    order = sorted(range(len(raw)), key=lambda i: raw[i] - math.floor(raw[i]), reverse=diff > 0)
    i = 0
    while diff:
        j = order[i % len(order)]
        if diff > 0:
            parts[j] += 1
            diff -= 1
        elif parts[j] > 1:
            parts[j] -= 1
            diff += 1
        i += 1
    return parts


def plan_collections(p: VecParams) -> list[CollectionPlan]:
    """Names, kinds and sizes of the collections (sizes sum to ``p.vectors``)."""
    rng = random.Random(f"bench-vectors:{p.seed}:plan")
    kinds = _kinds(p.collections)
    weights = [KIND_WEIGHT[k] * rng.lognormvariate(0, 0.5) for k in kinds]
    counts = _split(p.vectors, weights)
    out = []
    for i, (kind, count) in enumerate(zip(kinds, counts)):
        uid = synth.new_id(rng)
        name = {"knowledge": uid, "file": f"file-{uid}", "memory": f"user-memory-{uid}"}[kind]
        out.append(CollectionPlan(i, name, kind, count))
    return out


# --- the real profile ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RealPlan:
    """The real profile's collections and the order HridaAI would have written them in.

    ``events``: ``("file", i)`` adds file collection ``i``'s chunks (one ``add`` per ``ADD_BATCH``);
    ``("knowledge", k, i)`` copies file ``i``'s chunks into knowledge collection ``k`` (same documents, metadata and
    vectors, new chunk ids); ``("memory", m, j)`` upserts memory ``j`` of memory collection ``m``. Indexes are
    ``CollectionPlan.index`` (= position in ``collections``).
    """

    collections: tuple[CollectionPlan, ...]
    members: dict[int, tuple[int, ...]]  # knowledge index -> its files' indexes, in the order they were added
    events: tuple[tuple, ...]


def real_kinds(n: int) -> tuple[int, int, int]:
    """(knowledge bases, memory collections, files) of a real-shaped store of ``n`` collections: about one knowledge
    base per 250 collections plus one, one memory collection per 100 (at least one each), the rest files."""
    if n < 3:
        raise ValueError("the real profile needs at least 3 collections (a file, a knowledge base, a memory)")
    n_kb = max(1, round(n / 250) + 1) if n >= 6 else 1
    n_mem = max(1, round(n / 100))
    return n_kb, n_mem, n - n_kb - n_mem


def plan_real(p: VecParams) -> RealPlan:
    """Names, kinds, sizes and write order of a real-shaped store (deterministic from the seed)."""
    rng = random.Random(f"bench-vectors:{p.seed}:real-plan")
    n_kb, n_mem, n_files = real_kinds(p.collections)
    kinds = ["knowledge"] * n_kb + ["file"] * n_files + ["memory"] * n_mem
    files = range(n_kb, n_kb + n_files)
    sizes = {i: max(1, min(REAL_FILE_MAX, round(rng.lognormvariate(math.log(REAL_FILE_MEDIAN), REAL_FILE_SIGMA))))
             for i in files}
    kb_weights = [1 / (k + 1) for k in range(n_kb)]  # some knowledge bases get many more files than others
    in_kb: dict[int, list[int]] = {i: [] for i in files}
    for i in files:
        if rng.random() < REAL_IN_KNOWLEDGE:
            in_kb[i].append(rng.choices(range(n_kb), kb_weights)[0])
            if n_kb > 1 and rng.random() < 0.05:
                in_kb[i].append(rng.choice([k for k in range(n_kb) if k not in in_kb[i]]))
    for k in range(n_kb):  # every knowledge base holds at least one file
        if not any(k in ks for ks in in_kb.values()):
            in_kb[rng.choice(list(files))].append(k)
    members = {k: tuple(i for i in files if k in in_kb[i]) for k in range(n_kb)}
    mem_sizes = {m: rng.randint(*REAL_MEMORIES) for m in range(n_kb + n_files, p.collections)}
    # memories arrive between uploads: memory j of m is upserted before the file at a random position
    at: dict[int, list[tuple]] = {}
    for m, count in mem_sizes.items():
        for j, pos in enumerate(sorted(rng.randrange(n_files + 1) for _ in range(count))):
            at.setdefault(pos, []).append(("memory", m, j))
    events: list[tuple] = []
    for pos, i in enumerate([*files, None]):
        events += at.get(pos, [])
        if i is not None:
            events.append(("file", i))
            events += [("knowledge", k, i) for k in in_kb[i]]
    cols = []
    for idx, kind in enumerate(kinds):
        uid = synth.new_id(rng)
        name = {"knowledge": uid, "file": f"file-{uid}", "memory": f"user-memory-{uid}"}[kind]
        count = {"knowledge": lambda: sum(sizes[i] for i in members[idx]), "file": lambda: sizes[idx],
                 "memory": lambda: mem_sizes[idx]}[kind]()
        cols.append(CollectionPlan(idx, name, kind, count))
    return RealPlan(tuple(cols), members, tuple(events))


def real_parts(plan: RealPlan, files_per_part: int | None = None) -> list[list[tuple]]:
    """``plan.events`` cut into consecutive parts of ``files_per_part`` (``REAL_PART_FILES``) file uploads (one child
    process each)."""
    files_per_part = files_per_part or REAL_PART_FILES
    parts: list[list[tuple]] = [[]]
    files = 0
    for ev in plan.events:
        if ev[0] == "file":
            if files == files_per_part:
                parts.append([])
                files = 0
            files += 1
        parts[-1].append(ev)
    return [x for x in parts if x]


def knowledge_ids(p: VecParams, k: int, i: int, n: int) -> list[str]:
    """Chunk ids of file ``i``'s copy in knowledge base ``k`` (new ids, as HridaAI's re-insert makes)."""
    rng = random.Random(f"bench-vectors:{p.seed}:knowledge:{k}:{i}")
    return [synth.new_id(rng) for _ in range(n)]


def iter_real_items(p: VecParams, plan: RealPlan, events=None) -> Iterator[tuple[str, str, tuple]]:
    """(operation, collection name, (ids, embeddings, documents, metadatas)) for ``events`` (default: all), each
    one chromadb call: ``add`` for a file's batch and its knowledge-base copy, ``upsert`` of one memory."""
    cols = plan.collections
    memories: dict[int, list] = {}
    for ev in plan.events if events is None else events:
        if ev[0] == "file":
            for batch in iter_items(p, cols[ev[1]]):
                yield "add", cols[ev[1]].name, batch
        elif ev[0] == "knowledge":
            k, i = ev[1], ev[2]
            done = 0
            for ids, vecs, docs, metas in iter_items(p, cols[i]):
                yield "add", cols[k].name, (knowledge_ids(p, k, i, cols[i].count)[done:done + len(ids)], vecs, docs,
                                            metas)
                done += len(ids)
        else:
            m, j = ev[1], ev[2]
            if m not in memories:
                memories[m] = list(iter_items(p, cols[m], batch=1))
            yield "upsert", cols[m].name, memories[m][j]


def _write_real_part(p: VecParams, store: str, events: list[tuple]) -> dict:
    """Child process: write ``events`` through one chromadb client, as HridaAI's chroma client does
    (``get_or_create_collection(name, metadata={"hnsw:space": "cosine"})``, then ``add``/``upsert``)."""
    import resource

    import chromadb
    from chromadb.config import Settings

    plan = plan_real(p)
    client = chromadb.PersistentClient(path=store, settings=Settings(anonymized_telemetry=False, allow_reset=False))
    handles: dict = {}
    gen_s = 0.0
    doc_bytes = calls = 0
    added: dict[str, int] = {}
    t0 = time.perf_counter()
    for op, name, (ids, vecs, docs, metas) in _timed(iter_real_items(p, plan, events)):
        gen_s += _timed.last
        col = handles.get(name)
        if col is None:
            col = handles[name] = client.get_or_create_collection(name, metadata={"hnsw:space": "cosine"},
                                                                  embedding_function=None)
        getattr(col, op)(ids=ids, embeddings=vecs, documents=docs, metadatas=metas)
        calls += 1
        added[name] = added.get(name, 0) + len(ids)
        doc_bytes += sum(len(d.encode()) for d in docs)
    total_s = time.perf_counter() - t0
    del client, handles
    _release_chroma()
    return {"added": added, "calls": calls, "seconds": total_s, "seconds_generating_items": gen_s,
            "document_bytes": doc_bytes, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def store_stats(store: Path) -> dict[str, dict]:
    """Per collection name, from ``chroma.sqlite3``: ``in_queue`` = its rows in ``embeddings_queue``, ``queue_only`` =
    those newer than its vector segment's ``max_seq_id`` (all of them when the HNSW index was never persisted: under
    chromadb's sync_threshold), ``hnsw_persisted`` = whether the vector segment has a ``max_seq_id``."""
    con = sqlite3.connect(f"file:{store / 'chroma.sqlite3'}?mode=ro", uri=True)
    try:
        names = dict(con.execute("SELECT id, name FROM collections"))
        persisted = dict(con.execute("SELECT s.collection, m.seq_id FROM segments s JOIN max_seq_id m "
                                     "ON m.segment_id = s.id WHERE s.scope = 'VECTOR'"))
        rows = con.execute("SELECT topic, seq_id FROM embeddings_queue").fetchall()
    finally:
        con.close()
    out = {name: {"in_queue": 0, "queue_only": 0, "hnsw_persisted": cid in persisted} for cid, name in names.items()}
    for topic, seq in rows:
        cid = topic.rsplit("/", 1)[-1]
        if cid in names:
            c = out[names[cid]]
            c["in_queue"] += 1
            c["queue_only"] += seq > persisted.get(cid, -1)
    return out


def _by_kind(cols: list[dict]) -> dict[str, dict]:
    """Collections, vectors and size spread per kind, for the manifest."""
    out = {}
    for kind in ("file", "knowledge", "memory"):
        counts = sorted(c["count"] for c in cols if c["kind"] == kind)
        if counts:
            out[kind] = {"collections": len(counts), "vectors": sum(counts), "min": counts[0],
                         "median": counts[len(counts) // 2], "max": counts[-1],
                         "over_500": sum(1 for c in counts if c > 500),
                         "collections_hnsw_persisted": sum(1 for c in cols
                                                           if c["kind"] == kind and c["hnsw_persisted"]),
                         "vectors_queue_only": sum(c["queue_only"] for c in cols if c["kind"] == kind)}
    return out


def build_real(p: VecParams, out_dir: Path, log=print) -> dict:
    """The real profile's data dir: events written by a spawned child per ``REAL_PART_FILES`` files."""
    import chromadb

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "uploads").mkdir(exist_ok=True)
    write_empty_db(out_dir / "hridaai.db")
    plan = plan_real(p)
    store = out_dir / "vector_db"
    parts = real_parts(plan)
    t0 = time.perf_counter()
    added: dict[str, int] = {}
    gen_s = 0.0
    doc_bytes = calls = 0
    child_rss = []
    for n, events in enumerate(parts, 1):
        tp = time.perf_counter()
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
            r = ex.submit(_write_real_part, p, str(store), events).result()
        for name, k in r["added"].items():
            added[name] = added.get(name, 0) + k
        gen_s += r["seconds_generating_items"]
        doc_bytes += r["document_bytes"]
        calls += r["calls"]
        child_rss.append(round(r["peak_rss_mb"]))
        log(f"  part {n}/{len(parts)}: {sum(e[0] == 'file' for e in events)} files, {sum(r['added'].values()):,} "
            f"vectors in {time.perf_counter() - tp:.1f} s ({r['calls']} chromadb calls, child peak RSS "
            f"{r['peak_rss_mb']:.0f} MB)")
    total_s = time.perf_counter() - t0
    stats = store_stats(store)
    cols = [{"name": c.name, "kind": c.kind, "count": added.get(c.name, 0), **stats.get(c.name, {})}
            for c in plan.collections]
    bad = [c["name"] for c, cp in zip(cols, plan.collections) if c["count"] != cp.count]
    if bad:
        raise RuntimeError(f"collections written with another count than planned: {bad[:5]}")
    vectors = sum(c["count"] for c in cols)
    store_bytes = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    manifest = {"params": dataclasses.asdict(p), "profile": "real", "generator_version": VECTOR_GENERATOR_VERSION,
                "real_generator_version": REAL_GENERATOR_VERSION, "chromadb": chromadb.__version__,
                "add_batch": ADD_BATCH, "vectors": vectors, "by_kind": _by_kind(cols),
                "vectors_queue_only": sum(c["queue_only"] for c in cols),
                "vectors_persisted": vectors - sum(c["queue_only"] for c in cols),
                "embeddings_queue_rows": sum(c["in_queue"] for c in cols),
                "collections_persisted": sum(1 for c in cols if c["hnsw_persisted"]),
                "chromadb_calls": calls, "parts": len(parts), "child_peak_rss_mb": child_rss,
                "collections": cols, "document_bytes": doc_bytes, "store_bytes": store_bytes,
                "chroma_sqlite3_bytes": (store / "chroma.sqlite3").stat().st_size,
                "seconds_total": round(total_s, 1), "seconds_generating_items": round(gen_s, 1),
                "seconds_chromadb_add": round(total_s - gen_s, 1),
                "chromadb_add_vectors_per_s": round(vectors / max(total_s - gen_s, 1e-9), 1)}
    (out_dir / "bench-manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


class _Texts:
    """Documents sliced from the shared pseudo-text corpus (built once per process and seed)."""

    _cache: dict[int, synth.Corpus] = {}

    def __init__(self, seed: int, rng: random.Random) -> None:
        if seed not in self._cache:
            self._cache[seed] = synth.Corpus(random.Random(f"bench-vectors:{seed}:corpus"), size=1_000_000)
        self.corpus = self._cache[seed]
        self.rng = rng

    def text(self, n: int) -> str:
        src = self.corpus.text_
        off = self.rng.randrange(0, len(src) - n)
        return src[off:off + n]


def _file_meta(rng: random.Random, users: list[str], file_id: str | None = None) -> dict:
    ext, ctype = rng.choice(CONTENT_TYPES)
    name = f"{rng.choice(synth.WORDS)}-{rng.choice(synth.WORDS)}-{rng.randrange(1000)}.{ext}"
    return {"name": name, "source": name, "file_id": file_id or synth.new_id(rng),
            "hash": hashlib.sha256(f"{name}{rng.random()}".encode()).hexdigest(),
            "created_by": rng.choice(users), "content_type": ctype, "embedding_config": EMBEDDING_CONFIG}


def iter_items(p: VecParams, col: CollectionPlan, batch: int = ADD_BATCH) -> Iterator[tuple[list, np.ndarray, list,
                                                                                          list]]:
    """Yield (ids, float32 embeddings [n, dim], documents, metadatas) batches of one collection, deterministically."""
    rng = random.Random(f"bench-vectors:{p.seed}:{col.index}")
    nrng = np.random.Generator(np.random.PCG64([p.seed, col.index, VECTOR_GENERATOR_VERSION]))
    texts = _Texts(p.seed, rng)
    users = [synth.new_id(random.Random(f"bench-vectors:{p.seed}:user:{u}")) for u in range(8)]
    n_centres = max(1, col.count // 250)
    centres = nrng.standard_normal((n_centres, p.dim), dtype=np.float32)
    file_meta: dict = {}
    remaining_in_file = 0
    start_index = 0
    t_mem = synth.EPOCH_2023 + rng.randrange(synth.SPAN)
    done = 0
    while done < col.count:
        n = min(batch, col.count - done)
        ids, docs, metas = [], [], []
        for _ in range(n):
            ids.append(synth.new_id(rng))
            if col.kind == "memory":
                t_mem += rng.randrange(60, 86400)
                docs.append(texts.text(rng.randrange(30, 300)))
                meta = {"type": rng.choice(("user", "context")), "created_at": t_mem, "updated_at": t_mem}
                if rng.random() < 0.5:
                    meta["path"] = rng.choice(("preferences/food", "work/projects", "个人/爱好"))
                metas.append(meta)
                continue
            if remaining_in_file <= 0:  # next source file: a file collection has one, a knowledge base many
                fid = col.name.removeprefix("file-") if col.kind == "file" else None
                file_meta = _file_meta(rng, users, fid)
                remaining_in_file = col.count if col.kind == "file" else rng.randrange(20, 400)
                start_index = 0
            size = rng.randrange(500, 1000)
            docs.append(texts.text(size))
            metas.append({**file_meta, "start_index": start_index})
            start_index += size - 100  # RecursiveCharacterTextSplitter overlap
            remaining_in_file -= 1
        which = nrng.integers(0, n_centres, n)
        vecs = centres[which] + 0.8 * nrng.standard_normal((n, p.dim), dtype=np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        yield ids, vecs.astype(np.float32, copy=False), docs, metas
        done += n


def write_empty_db(path: Path) -> None:
    """hridaai.db with the real schema (48 tables, indexes) and only the alembic_version row."""
    from bench.generate import SCHEMA_SOURCE, copy_schema

    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN")
        for sql in copy_schema(SCHEMA_SOURCE, db):
            db.execute(sql)
        db.execute("COMMIT")
    finally:
        db.close()


def build(p: VecParams, out_dir: Path, log=print) -> dict:
    """Build a data dir (hridaai.db, vector_db/, uploads/) in ``out_dir``; return its manifest."""
    import chromadb
    from chromadb.config import Settings

    if p.profile == "real":
        return build_real(p, out_dir, log)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "uploads").mkdir(exist_ok=True)
    write_empty_db(out_dir / "hridaai.db")
    plans = plan_collections(p)
    client = chromadb.PersistentClient(path=str(out_dir / "vector_db"),
                                       settings=Settings(anonymized_telemetry=False, allow_reset=False))
    t0 = time.perf_counter()
    gen_s = 0.0
    doc_bytes = 0
    cols = []
    for cp in plans:
        col = client.create_collection(cp.name, metadata={"hnsw:space": "cosine"}, embedding_function=None)
        tc = time.perf_counter()
        for ids, vecs, docs, metas in _timed(iter_items(p, cp)):
            gen_s += _timed.last
            col.add(ids=ids, embeddings=vecs, documents=docs, metadatas=metas)
            doc_bytes += sum(len(d.encode()) for d in docs)
        cols.append({"name": cp.name, "kind": cp.kind, "count": col.count(), "seconds": time.perf_counter() - tc})
        log(f"  {cp.name}: {cp.count:,} vectors in {cols[-1]['seconds']:.1f} s")
    total_s = time.perf_counter() - t0
    del client
    _release_chroma()
    store_bytes = sum(f.stat().st_size for f in (out_dir / "vector_db").rglob("*") if f.is_file())
    manifest = {"params": dataclasses.asdict(p), "generator_version": VECTOR_GENERATOR_VERSION,
                "chromadb": chromadb.__version__, "add_batch": ADD_BATCH,
                "vectors": sum(c["count"] for c in cols), "collections": cols,
                "document_bytes": doc_bytes, "store_bytes": store_bytes,
                "seconds_total": round(total_s, 1), "seconds_generating_items": round(gen_s, 1),
                "seconds_chromadb_add": round(total_s - gen_s, 1),
                "chromadb_add_vectors_per_s": round(sum(c["count"] for c in cols) / max(total_s - gen_s, 1e-9), 1)}
    (out_dir / "bench-manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _timed(it):
    """Iterate ``it``, keeping the time spent producing the last item in ``_timed.last``."""
    while True:
        t = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        _timed.last = time.perf_counter() - t
        yield item


_timed.last = 0.0


def _release_chroma() -> None:
    """Drop chromadb's cached per-path systems so the store's files are closed before it is renamed/copied."""
    try:
        from chromadb.api.shared_system_client import SharedSystemClient

        SharedSystemClient.clear_system_cache()
    except Exception:  # an internal API: best effort only
        pass


def ensure_dataset(p: VecParams, cache_dir: Path = CACHE_DIR, log=print) -> tuple[Path, dict]:
    """Return (data dir, manifest), generating into the cache first if it is not there yet."""
    final = cache_dir / p.key()
    manifest_path = final / "bench-manifest.json"
    if manifest_path.exists():
        log(f"vector dataset: cached {final}")
        return final, json.loads(manifest_path.read_text())
    tmp = cache_dir / f".tmp-{p.key()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"vector dataset: generating {p} -> {final}")
    manifest = build(p, tmp, log=log)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    log(f"vector dataset: {manifest['vectors']:,} vectors in {manifest['seconds_total']} s "
        f"(chromadb add {manifest['chromadb_add_vectors_per_s']:,.0f} vectors/s), "
        f"store {manifest['store_bytes'] / 1e6:.0f} MB")
    if manifest.get("profile") == "real":
        log(f"  {describe_real(manifest)}")
    return final, manifest


def describe_real(m: dict) -> str:
    """One line: collections by kind, and where the vectors sit."""
    kinds = ", ".join(f"{v['collections']:,} {k} ({v['vectors']:,} vectors, median {v['median']:,})"
                      for k, v in m["by_kind"].items())
    return (f"{len(m['collections']):,} collections: {kinds}; {m['vectors']:,} vectors: {m['vectors_queue_only']:,} "
            f"only in embeddings_queue, {m['vectors_persisted']:,} in persisted HNSW files of "
            f"{m['collections_persisted']} collections ({m['embeddings_queue_rows']:,} queue rows in all); store "
            f"{m['store_bytes'] / 1e6:.0f} MB")


def content_digest(store: Path) -> dict[str, str]:
    """Per collection (by name): sha256 of its metadata, ids, documents, metadatas and float32 vectors, read back
    through chromadb from a copy of ``store`` (chromadb may rewrite what it opens)."""
    import tempfile

    import chromadb
    from chromadb.config import Settings

    with tempfile.TemporaryDirectory(prefix="bench-vdigest-") as tmp:
        copy = Path(tmp) / "vector_db"
        shutil.copytree(store, copy)
        client = chromadb.PersistentClient(path=str(copy), settings=Settings(anonymized_telemetry=False))
        out = {}
        for c in sorted(client.list_collections(), key=lambda c: c.name):
            col = client.get_collection(c.name, embedding_function=None)
            h = hashlib.sha256(json.dumps(col.metadata, sort_keys=True).encode())
            got = col.get(include=["embeddings", "documents", "metadatas"])
            for i, e, d, m in sorted(zip(got["ids"], got["embeddings"], got["documents"], got["metadatas"]),
                                     key=lambda t: t[0]):
                h.update(i.encode())
                h.update(np.asarray(e, dtype=np.float32).tobytes())
                h.update(d.encode())
                h.update(json.dumps(m, sort_keys=True).encode())
            out[c.name] = h.hexdigest()
        del client
        _release_chroma()
    return out


def params(profile: str, vectors: int, collections: int | None, dim: int, seed: int) -> VecParams:
    """VecParams from the command line: ``vectors`` means nothing (0) in the real profile, where the collections'
    sizes decide; ``collections`` defaults to 20 (uniform) or 300 (real)."""
    if profile == "real":
        return VecParams(0, collections or 300, dim, seed, "real")
    return VecParams(vectors, collections or VecParams.collections, dim, seed)


def main(argv=None) -> None:
    """CLI: generate a vector data dir into the cache (or ``--out``) and print its manifest."""
    ap = argparse.ArgumentParser(prog="python -m bench.vector_data", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=PROFILES, default="uniform")
    ap.add_argument("--vectors", type=int, default=VecParams.vectors, help="uniform profile only")
    ap.add_argument("--collections", type=int, help="default 20 (uniform), 300 (real)")
    ap.add_argument("--dim", type=int, default=VecParams.dim)
    ap.add_argument("--seed", type=int, default=VecParams.seed)
    ap.add_argument("--out", type=Path, help="write here instead of the cache (must not exist)")
    a = ap.parse_args(argv)
    p = params(a.profile, a.vectors, a.collections, a.dim, a.seed)
    if a.out:
        if a.out.exists():
            ap.error(f"{a.out} exists")
        print(json.dumps(build(p, a.out, log=_stderr), indent=2))
    else:
        print(json.dumps(ensure_dataset(p, log=_stderr)[1], indent=2))


def _stderr(msg: str) -> None:
    """Progress on stderr: stdout carries the manifest."""
    print(msg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
