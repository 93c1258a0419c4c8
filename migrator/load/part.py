"""Loading one part of a table (a ledger unit): read, convert and write its batches, resuming after the last
committed one. Runs in the main process (`--jobs 1`) or in a load worker process (`workers`)."""

from __future__ import annotations

import asyncio

from migrator import ledger
from migrator.context import RunContext
from migrator.load.read import Reader
from migrator.load.split import Part
from migrator.load.write import BatchWriter


async def load_part(ctx: RunContext, conn, part: Part) -> bool:
    """Every batch of the part not yet in the ledger; True once the unit is recorded done (False: stop asked)."""
    unit = part.unit
    if any(u["done"] for u in await ledger.units(conn, unit)):
        return True
    done = (await ledger.progress(conn, unit)).get(unit)
    ctx.progress.start(unit, rows=part.rows, nbytes=part.bytes)
    if done:
        ctx.progress.advance(unit, rows=done.rows + done.quarantined, nbytes=0, batch=done.batches)
    table = ctx.plan.table(part.table)
    writer = BatchWriter(ctx, conn, table, unit)
    batch_no = done.batches if done else 0
    after = done.last_key if done else part.after
    reader = Reader(ctx.snapshot, table, ctx.plan.policies, after=after, until=part.until)
    try:
        while True:
            item = await asyncio.to_thread(reader.next)
            if item is None:
                break
            batch_no += 1
            await writer.write(batch_no, item)
            ctx.progress.advance(unit, rows=len(item.raws), nbytes=item.nbytes, batch=batch_no)
            if ctx.stop.requested:
                return False
    finally:
        reader.close()
    await ledger.mark_unit_done(conn, unit)
    ctx.progress.finish(unit)
    return True
