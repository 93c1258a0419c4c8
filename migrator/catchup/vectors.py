"""The vector part of a catch-up: document_chunk brought from the old snapshot's Chroma store to the new one's.

The delta comes from catchup/vector_delta (collections not written in between are not read). All removals first
(collections gone or remade, then the chunks removed from or rewritten in changed collections), then all writes
(the changed chunks, the new collections): document_chunk.id is global, so a chunk that moved between collections is
gone before it is written again. Each collection's removal and its write are a ledger step in the pgvector database,
committed with its rows; the chunks are converted exactly as the load converts them (policies, collisions of the new
snapshot, quarantine under `vector:<name>`).
"""

from __future__ import annotations

import asyncio

import asyncpg

from migrator import ledger
from migrator.catchup import steps as steps_mod, vector_delta
from migrator.context import RunContext
from migrator.errors import PreflightError
from migrator.snapshot import Snapshot
from migrator.sources.chroma import direct as chroma_direct
from migrator.targets import pgvector as pgv, postgres as pgt
from migrator.vectors.load import convert_chunks, unit_of

PREFIX = "catchup:"


async def apply(ctx: RunContext, old: Snapshot, policies: dict) -> dict:
    """Carry the store's changes; returns what was done (empty when the install has no vector store)."""
    new = ctx.snapshot
    if not ctx.plan.vectors or new.vector_path is None or old.vector_path is None:
        return {}
    a, b = chroma_direct.open_store(old.vector_path), chroma_direct.open_store(new.vector_path)
    if a is None or b is None:  # unchanged (checked before anything was written): nothing to carry
        for store in (a, b):
            if store is not None:
                store.close()
        return {}
    try:
        try:
            delta = await asyncio.to_thread(vector_delta.store_delta, a, b)
        except vector_delta.Unreadable as exc:
            raise PreflightError(f"the Chroma store's changes cannot be read exactly: {exc}",
                                 hint="migrate again into an empty target") from None
        conn = await pgt.connect(ctx.settings.pgvector_url or ctx.settings.target_url, bulk=True)
        try:
            await pgv.register_encoded(conn)
            return await _apply(ctx, conn, b, delta, policies)
        finally:
            await pgt.close_quietly(conn)
    finally:
        a.close()
        b.close()


async def _apply(ctx: RunContext, conn: asyncpg.Connection, store: chroma_direct.DirectStore,
                 delta: vector_delta.StoreDelta, policies: dict) -> dict:
    sid = ctx.snapshot.snapshot_id
    done_steps = await steps_mod.Steps.of(conn, sid, ctx.progress)
    out = {"added": delta.added, "removed": delta.removed, "untouched": len(delta.untouched), "upserted": 0,
           "deleted": 0, "quarantined": 0}
    for name in delta.removed:
        done = await done_steps.run(f"{PREFIX}{sid}:vector-drop:{name}", lambda name=name: _drop_collection(conn, name))
        out["deleted"] += (done or {}).get("deleted", 0)
    for c in delta.changed:
        ids = c.removed + c.upserted
        done = await done_steps.run(f"{PREFIX}{sid}:vector-remove:{c.name}",
                                    lambda c=c, ids=ids: _remove_chunks(conn, c.name, ids))
        out["deleted"] += (done or {}).get("deleted", 0)
    writes = [(c.name, set(c.upserted)) for c in delta.changed] + [(name, None) for name in delta.added]
    for name, wanted in writes:
        done = await done_steps.run(f"{PREFIX}{sid}:vector-write:{name}",
                                    lambda name=name, wanted=wanted: _write_chunks(ctx, conn, store, name, wanted,
                                                                                   policies))
        if done:
            out["upserted"] += done["written"]
            out["quarantined"] += done["quarantined"]
    return out


async def _drop_collection(conn: asyncpg.Connection, name: str) -> dict:
    """A collection HridaAI deleted (or deleted and made again): its chunks and its ledger records."""
    status = await conn.execute(f"DELETE FROM {pgv.TABLE} WHERE collection_name = $1", name)
    await ledger.forget_unit_records(conn, unit_of(name))
    return {"deleted": int(status.split()[-1])}


async def _remove_chunks(conn: asyncpg.Connection, name: str, ids: list[str]) -> dict:
    """Chunks removed from a collection or about to be written again, with their ledger records."""
    if not ids:
        return {"deleted": 0}
    status = await conn.execute(f"DELETE FROM {pgv.TABLE} WHERE collection_name = $1 AND id = ANY($2::text[])",
                                name, ids)
    await ledger.forget_unit_records(conn, unit_of(name), [ledger.dumps([i]) for i in ids])
    return {"deleted": int(status.split()[-1])}


async def _write_chunks(ctx: RunContext, conn: asyncpg.Connection, store: chroma_direct.DirectStore, name: str,
                        wanted: set[str] | None, policies: dict) -> dict:
    """The collection's chunks `wanted` (all when None) from the new snapshot, converted as the load converts them."""
    chunks = await asyncio.to_thread(_read, store, name, wanted)
    collisions = ctx.plan.vectors.collisions.get(name, {})
    records, quarantine, fixups = convert_chunks(name, chunks, collisions, ctx.plan.vectors.spec, policies)
    await pgv.copy_encoded(conn, records)
    await ledger.record_unit_rows(conn, unit_of(name), quarantine, fixups)
    return {"written": len(records), "quarantined": len(quarantine)}


def _read(store: chroma_direct.DirectStore, name: str, wanted: set[str] | None) -> list:
    reader = store.reader(name)
    if reader is None:
        raise PreflightError(f"collection {name}: the direct reader refuses it in the new snapshot",
                             hint="migrate again into an empty target")
    return [c for batch in reader.iter_batches(batch_size=1000) for c in batch.chunks
            if wanted is None or c.id in wanted]
