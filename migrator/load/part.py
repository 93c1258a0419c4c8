"""Loading one part of a table (a ledger unit): read, convert and write its batches, resuming after the last
committed one. Runs in the main process (`--jobs 1`) or in a load worker process (load_workers)."""

from __future__ import annotations

import asyncio

from migrator import ledger
from migrator.load import split as load_parts
from migrator.load.write import BatchWriter
from migrator.load.read import Reader
from migrator.plan.model import Plan, TablePlan
from migrator.progress import Progress
from migrator.settings import Settings
from migrator.snapshot import Snapshot


async def load_part(conn, settings: Settings, plan: Plan, table: TablePlan, part: load_parts.Part, spec: dict,
                    snapshot: Snapshot, progress: Progress, stop) -> bool:
    """Every batch of the part not yet in the ledger; True once the unit is recorded done (False: stop asked)."""
    unit = part.unit
    if any(u["done"] for u in await ledger.units(conn, unit)):
        return True
    done = (await ledger.progress(conn, unit)).get(unit)
    progress.start(unit, rows=part.rows, nbytes=part.bytes)
    if done:
        progress.advance(unit, rows=done.rows + done.quarantined, nbytes=0, batch=done.batches)
    writer = BatchWriter(conn, settings=settings, plan=plan, table=table, unit=unit, spec=spec,
                         snapshot_id=snapshot.snapshot_id)
    batch_no = done.batches if done else 0
    after = done.last_key if done else part.after
    reader = Reader(snapshot, table, plan.policies, after=after, until=part.until)
    try:
        while True:
            item = await asyncio.to_thread(reader.next)
            if item is None:
                break
            batch_no += 1
            await writer.write(batch_no, item)
            progress.advance(unit, rows=len(item.raws), nbytes=item.nbytes, batch=batch_no)
            if stop.requested:
                return False
    finally:
        reader.close()
    await ledger.mark_unit_done(conn, unit)
    progress.finish(unit)
    return True
