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

``python -m bench.vector_data --vectors N --collections N`` builds one into the cache without benchmarking.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench import synth

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
VECTOR_GENERATOR_VERSION = 1  # bump when the generated content changes, so stale caches are not reused
ADD_BATCH = 5_000  # below chromadb's max_batch_size (5461 with its SQLite backend)
EMBEDDING_CONFIG = repr({"engine": "", "model": "sentence-transformers/all-MiniLM-L6-v2"})
CONTENT_TYPES = (("pdf", "application/pdf"), ("md", "text/markdown"), ("txt", "text/plain"),
                 ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"))
# Relative size of a collection by kind (lognormal around these): knowledge bases are big, memories small.
KIND_WEIGHT = {"knowledge": 4.0, "file": 1.0, "memory": 0.05}


@dataclasses.dataclass(frozen=True)
class VecParams:
    """What to generate; the hash of these (+ generator and chromadb versions) names the cache directory."""

    vectors: int = 200_000
    collections: int = 20
    dim: int = 384
    seed: int = 1

    def key(self) -> str:
        """Stable short hash of the parameters, the generator version and the chromadb version."""
        import chromadb

        blob = json.dumps({**dataclasses.asdict(self), "v": VECTOR_GENERATOR_VERSION, "chromadb": chromadb.__version__},
                          sort_keys=True)
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
    return final, manifest


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


def main(argv=None) -> None:
    """CLI: generate a vector data dir into the cache (or ``--out``) and print its manifest."""
    ap = argparse.ArgumentParser(prog="python -m bench.vector_data", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", type=int, default=VecParams.vectors)
    ap.add_argument("--collections", type=int, default=VecParams.collections)
    ap.add_argument("--dim", type=int, default=VecParams.dim)
    ap.add_argument("--seed", type=int, default=VecParams.seed)
    ap.add_argument("--out", type=Path, help="write here instead of the cache (must not exist)")
    a = ap.parse_args(argv)
    p = VecParams(a.vectors, a.collections, a.dim, a.seed)
    if a.out:
        if a.out.exists():
            ap.error(f"{a.out} exists")
        print(json.dumps(build(p, a.out), indent=2))
    else:
        print(json.dumps(ensure_dataset(p)[1], indent=2))


if __name__ == "__main__":
    main()
