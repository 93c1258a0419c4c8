"""CPU accounting: machine-wide busy core-seconds (Linux /proc/stat), to split a measured load into the client's
own CPU and everything else (the PostgreSQL server, on a dedicated bench machine)."""
from __future__ import annotations

import os
import resource


def busy_core_s() -> float | None:
    """Core-seconds the machine has been busy since boot (user+nice+system+irq+softirq+steal); None off Linux."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def own_core_s() -> float:
    """CPU seconds (user+system) of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def delta(before: float | None, after: float | None) -> float | None:
    """after - before, or None when either is unknown."""
    return after - before if before is not None and after is not None else None
