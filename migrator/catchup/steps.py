"""A catch-up's ledger steps: each piece of work committed once, together with the step that records it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import asyncpg

from migrator import ledger
from migrator.progress import Progress


class Steps:
    """The steps recorded in one ledger (read once: a catch-up is the only writer of its target, under the lock),
    and a way to run the next one exactly once."""

    def __init__(self, conn: asyncpg.Connection, snapshot_id: str, done: set[str], progress: Progress | None) -> None:
        self.conn, self.snapshot_id, self.done, self.progress = conn, snapshot_id, done, progress

    @classmethod
    async def of(cls, conn: asyncpg.Connection, snapshot_id: str, progress: Progress | None = None) -> "Steps":
        """The steps `conn`'s ledger holds."""
        return cls(conn, snapshot_id, set(await ledger.steps(conn)), progress)

    async def run(self, name: str, work: Callable[[], Awaitable[dict | None]]) -> dict | None:
        """`work` and its step in one transaction, unless the step is recorded already (then None); its result is
        the step's detail and, when it did something, a progress event (the `catch-up` failpoint)."""
        if name in self.done:
            return None
        async with self.conn.transaction():
            out = await work()
            await ledger.step_done(self.conn, name, self.snapshot_id, json.dumps(out) if out else None)
        self.done.add(name)
        if out and self.progress is not None:
            self.progress.event("catch-up", step=name, **out)
        return out
