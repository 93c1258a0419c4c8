"""Running a stage's work together: coroutines over connections (`run_all`), and worker processes
(`spawn_pool`, the one place that starts them).

Conversion, hashing and chromadb reads are Python work that holds the GIL, so threads would share one core; worker
processes use them all. They are spawned (a clean interpreter: no copy of the caller's event loop, sockets or
chromadb state). Functions that run inside a worker carry the `w_` prefix (dlt's habit), so that a reader knows
which process runs them and that their arguments travel by pickle.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any


async def run_all(coros: Iterable[Coroutine[Any, Any, Any]]) -> list[Any]:
    """Run the coroutines concurrently and return their results; when one fails (or this is cancelled), cancel the
    others, wait until they have stopped, and raise."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def spawn_pool(workers: int, *, initializer: Callable | None = None, initargs: tuple = (),
               max_tasks_per_child: int | None = None, thread_when_one: bool = False) -> Executor:
    """`workers` spawned processes (`max_tasks_per_child=1`: a fresh process per task, its memory given back when
    it ends); with `thread_when_one` and one worker, a thread instead (no process start-up)."""
    if thread_when_one and workers <= 1:
        return ThreadPoolExecutor(max_workers=1)
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=initializer, initargs=initargs, max_tasks_per_child=max_tasks_per_child)
