"""Verify the vectors: counts per collection, every vector (float32, padding removed), ids, documents, metadata;
self-retrieval and recall@10 against an exact search over the snapshot's vectors."""

from __future__ import annotations

import asyncio
import json
import random

import numpy as np

from migrator import ledger, vectors_source
from migrator.concurrency import run_all
from migrator.plan_model import Plan
from migrator.settings import Settings
from migrator.snapshot import Snapshot
from migrator.sources import chroma
from migrator.targets import pgvector as pgv
from migrator.targets import postgres as pgt
from migrator.vectors_load import BATCH, unit_of
from migrator.vectors_plan import spec_of

SAMPLE_PER_COLLECTION = 20
EXACT_LIMIT = 50_000  # recall@10 needs the whole collection in memory for the exact scan
K = 10
SHOW = 10


async def check(settings: Settings, plan: Plan, snapshot: Snapshot, *, seed: int | None = None) -> dict | None:
    """Compare every collection; returns the vectors section of the verify report (with its problems).

    Collections are compared in parallel over `--jobs` connections, each reading its next source batch (chromadb's
    own `get`, independent of the load's direct file reader) in a thread while the current one is compared."""
    if not plan.vectors:
        return None
    spec = spec_of(settings)
    client = vectors_source.client(settings, snapshot)
    out = {"collections": {}, "problems": [], "self_retrieval": {"queries": 0, "hits": 0}, "recall_at_10": None}
    conns = [await pgt.connect(settings.pgvector_url) for _ in range(max(1, min(settings.jobs,
                                                                            len(plan.vectors["collections"]))))]
    results: dict[str, tuple] = {}
    try:
        for c in conns:
            await pgv._register(c)
        counts = {r[0]: r[1] for r in await conns[0].fetch(
            "SELECT collection_name, count(*) FROM document_chunk GROUP BY 1")}
        quarantined = await _quarantined(conns[0])
        todo = list(plan.vectors["collections"])

        async def work(conn) -> None:
            while todo:
                info = todo.pop(0)
                problems: list[str] = []
                stats = {"queries": 0, "hits": 0}
                recalls: list[float] = []
                rng = random.Random(None if seed is None else f"{seed}:{info['name']}")
                loaded: tuple[list, list] = ([], [])
                entry = await _collection(conn, client, info, spec, counts, quarantined, problems, loaded)
                entry.update(await _search(conn, info, spec, rng, stats, problems, recalls, loaded))
                results[info["name"]] = (entry, problems, stats, recalls)

        await run_all(work(c) for c in conns)
        extra = set(counts) - {c["name"] for c in plan.vectors["collections"]}
    finally:
        for c in conns:
            await pgt.close_quietly(c)
    recalls_all: list[float] = []
    for info in plan.vectors["collections"]:  # the report in plan order, whatever finished first
        entry, problems, stats, recalls = results[info["name"]]
        out["collections"][info["name"]] = entry
        out["problems"] += problems
        out["self_retrieval"]["queries"] += stats["queries"]
        out["self_retrieval"]["hits"] += stats["hits"]
        recalls_all += recalls
    if extra:
        out["problems"].append(f"document_chunk holds collections not in the source: {sorted(extra)[:SHOW]}")
    out["recall_at_10"] = round(float(np.mean(recalls_all)), 4) if recalls_all else None
    return out


async def _quarantined(conn) -> dict[str, dict[str, str]]:
    rows = await conn.fetch(f"SELECT unit, key, policy FROM {ledger.S}.quarantine WHERE unit LIKE 'vector:%'") \
        if await ledger.exists(conn) else []
    out: dict[str, dict[str, str]] = {}
    for unit, key, policy in rows:
        out.setdefault(unit, {})[json.loads(key)[0]] = policy
    return out


async def _collection(conn, client, info: dict, spec, counts: dict, quarantined: dict, problems: list,
                      loaded: tuple[list, list]) -> dict:
    """Every chunk compared; the loaded ids and vectors are kept in `loaded` for the search checks (small ones)."""
    name = info["name"]
    keep = info["count"] <= EXACT_LIMIT
    q = quarantined.get(unit_of(name), {})
    source = 0
    bad: list[str] = []
    batches = chroma.iter_batches_client(client, name, batch_size=BATCH)
    pending = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
    while (batch := await pending) is not None:
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
                    loaded[0].append(c.id)
                    loaded[1].append(np.asarray(c.embedding, dtype=np.float32))
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


async def _search(conn, info: dict, spec, rng, stats: dict, problems: list, recalls: list,
                  loaded: tuple[list, list]) -> dict:
    """Self-retrieval (the chunk first at distance ~0) and recall@10 vs an exact cosine scan (of what was loaded)."""
    name = info["name"]
    ids, vecs = loaded
    if not vecs:
        return {"self_retrieval": None, "recall_at_10": None}
    matrix = np.vstack(vecs)
    unit = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-30)
    picks = rng.sample(range(len(ids)), min(SAMPLE_PER_COLLECTION, len(ids)))
    hits, local = 0, []
    for i in picks:
        query = pgv.pad(matrix[i], spec.dimension)
        rows = await conn.fetch("SELECT id, vector <=> $1 AS d FROM document_chunk WHERE collection_name = $2 "
                                "ORDER BY vector <=> $1 LIMIT $3", _param(query, spec), name, K)
        exact = 1.0 - unit @ unit[i]
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
