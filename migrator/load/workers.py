"""Table parts loaded in worker processes: each worker reads its part from the snapshot, converts it and COPYs it
on its own connection, so that reading and converting (Python work that holds the GIL) use every core.

The main process schedules parts (parents before children) and relays the workers' progress. A worker never
outlives the run: it is killed with its parent (PR_SET_PDEATHSIG on Linux, and a check of its parent after every
batch elsewhere), it stops after the current batch once the run is asked to stop, and it holds a shared advisory
lock (ledger.WRITERS_KEY) that a later run waits for before reading the ledger — no batch of a killed run can
commit behind a resumed run's back.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import functools
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from migrator import ledger
from migrator.context import RunContext
from migrator.errors import MigrationError, TransientError
from migrator.load.part import load_part
from migrator.load.split import Part
from migrator.parallel import spawn_pool
from migrator.progress import Progress
from migrator.targets import postgres as pgt

PR_SET_PDEATHSIG = 1


class Pool:
    """`workers` spawned load processes, started before the run's context exists (their start-up overlaps the
    snapshot and the plan) and handed it once it does (`start`); `await pool.load(part)` loads one part in one of
    them. Their progress comes back to `progress` here."""

    def __init__(self, workers: int, progress: Progress):
        mp = multiprocessing.get_context("spawn")  # the queues and event the spawned workers share with this process
        self.events = mp.Queue()
        self.handoff = mp.Queue()  # the run's context, once per worker (a worker's initializer waits for it)
        self.stop_event = mp.Event()
        self.progress = progress
        self.loop: asyncio.AbstractEventLoop | None = None
        self.executor = spawn_pool(workers, initializer=w_start,
                                   initargs=(self.handoff, self.events, self.stop_event, os.getpid()))
        self.workers = workers
        self.closed = self.started = False
        self.relay = threading.Thread(target=self._relay, daemon=True, name="load-progress")
        for _ in range(workers):  # each submit starts one more process (up to `workers`): start them all now
            self.executor.submit(w_ready)

    def start(self, ctx: RunContext, loop: asyncio.AbstractEventLoop) -> None:
        """Hand the workers the run's context (`ctx.portable()`); their progress goes to `loop` from now on."""
        self.loop, self.started = loop, True
        self.relay.start()
        portable = ctx.portable()
        for _ in range(self.workers):
            self.handoff.put(portable)

    async def load(self, part: Part) -> bool:
        """True once the part is done; False when it stopped early (stop asked)."""
        try:
            return await asyncio.wrap_future(self.executor.submit(w_load, part))
        except BrokenProcessPool as exc:
            raise TransientError(f"a load worker process died while loading {part.unit}",
                                 detail=f"{exc} (killed by a signal, or by the kernel's out-of-memory killer?)",
                                 hint="everything committed is in the ledger; `migrate run --resume` continues"
                                 ) from None

    def stop(self) -> None:
        """Workers finish their current batch, commit it and return."""
        self.stop_event.set()

    def close(self, *, kill: bool) -> None:
        """Wait for the workers to exit; kill=True ends them at once (a batch in flight rolls back)."""
        if self.closed:
            return
        self.closed = True
        if kill or not self.started:  # never started: they wait for a context that will not come
            for proc in list((getattr(self.executor, "_processes", None) or {}).values()):
                proc.kill()
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self.started:
            self.events.put(None)
            self.relay.join(timeout=5)
        self.events.close()
        # a context handed to workers killed before they read it stays in the pipe: its feeder thread must not
        # hold this process's exit (multiprocessing joins it at exit otherwise, for ever)
        self.handoff.cancel_join_thread()
        self.handoff.close()

    def _relay(self) -> None:
        while (msg := self.events.get()) is not None:
            name, args, kwargs = msg
            try:
                self.loop.call_soon_threadsafe(functools.partial(getattr(self.progress, name), *args, **kwargs))
            except RuntimeError:  # the loop has closed
                return


# ---- in the worker process ----

_state: dict[str, Any] = {}


class _QueueProgress(Progress):
    """Progress calls sent to the main process, which shows them."""

    def __init__(self, events):
        self.events = events

    def start(self, unit: str, **kw) -> None:
        self.events.put(("start", (unit,), kw))

    def advance(self, unit: str, **kw) -> None:
        self.events.put(("advance", (unit,), kw))

    def finish(self, unit: str) -> None:
        self.events.put(("finish", (unit,), {}))

    def event(self, stage: str, **fields: Any) -> None:
        self.events.put(("event", (stage,), fields))


class _StopFlag:
    """Stop after the current batch when the run asks, or when the main process is gone."""

    def __init__(self, event, parent: int):
        self.event = event
        self.parent = parent

    @property
    def requested(self) -> bool:
        return self.event.is_set() or os.getppid() != self.parent


def w_start(handoff, events, stop_event, parent: int) -> None:
    """A worker's initializer: die with the parent, ignore Ctrl-C, wait for the run's context (Pool.start) and keep
    it with this process's own progress (sent to the parent) and stop flag."""
    _die_with_parent()
    if os.getppid() != parent:  # the run died before PR_SET_PDEATHSIG was set: no signal will come, go now
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the whole group: the main decides
    ctx: RunContext = handoff.get()
    loop = asyncio.new_event_loop()
    _state.update(ctx=ctx.with_(progress=_QueueProgress(events), stop=_StopFlag(stop_event, parent)), loop=loop,
                  conn=None)
    atexit.register(_close)


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass  # the per-batch parent check still stops the worker


def w_ready() -> None:
    """Nothing: submitted once per worker so that every process starts (and imports) before the first part."""


def w_load(part: Part) -> bool:
    """Load one part in this worker (its connection is opened once and kept); errors become MigrationErrors."""
    try:
        return _state["loop"].run_until_complete(_load_async(part))
    except MigrationError:
        raise
    except Exception as exc:
        conn = _state["conn"]
        lost = pgt.lost_connection(exc, closed=conn is not None and conn.is_closed(),
                                   where=f"while loading {part.unit}")
        if lost is not None:
            raise lost from None
        raise MigrationError(f"loading {part.unit} failed: {exc.__class__.__name__}: {exc}",
                             detail="".join(traceback.format_exception(exc, limit=-8)).strip()) from None


async def _load_async(part: Part) -> bool:
    ctx: RunContext = _state["ctx"]
    if ctx.stop.requested:  # the run is stopping or gone: never open a session that could commit behind it
        return False
    conn = _state["conn"]
    if conn is None or conn.is_closed():
        conn = _state["conn"] = await pgt.connect(ctx.settings.target_url, bulk=True)
        await ledger.hold_writer(conn)
    return await load_part(ctx, conn, part)


def _close() -> None:
    conn, loop = _state.get("conn"), _state.get("loop")
    if conn is not None and loop is not None and not loop.is_closed():
        loop.run_until_complete(pgt.close_quietly(conn))
