"""Running the per-connection workers of a stage together."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any


async def run_all(coros: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run the coroutines concurrently; when one fails (or this is cancelled), cancel the others, wait until they
    have stopped, and raise."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
