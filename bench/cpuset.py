"""``--split-cpus``: the PostgreSQL server on one set of cores, the tool on a disjoint one (Linux).

What a separate database server would see: the server's backends cannot take the tool's cores and the other way
round. ``split_spec("auto")`` gives the server the first half of the cores this process may use (rounded up) and the
tool the rest (1 + 1 on 2 cores); ``"0-1:2-3"`` names them (server:tool, taskset's list syntax). ``pin_server`` pins
the postmaster and every process under it (backends forked later inherit its mask); ``pin_tool`` pins every thread
of this process, so what it starts afterwards — the ``migrate`` child with its workers, the ceilings' connections'
client side, chromadb's threads — inherits the tool's mask. ``os.sched_setaffinity`` does what ``taskset -a -p``
does.
"""
from __future__ import annotations

import os
from pathlib import Path


def parse_list(text: str) -> set[int]:
    """taskset's CPU list syntax: ``0``, ``0,2``, ``0-3``, ``0-1,4``."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    if not out:
        raise ValueError(f"empty CPU list {text!r}")
    return out


def fmt(cpus: set[int]) -> str:
    """A CPU set as a list: ``{0, 1, 3}`` -> ``0,1,3``."""
    return ",".join(str(c) for c in sorted(cpus))


def split_spec(spec: str, available: set[int] | None = None) -> tuple[set[int], set[int]]:
    """(server CPUs, tool CPUs) from ``auto`` or ``SERVER:TOOL``; disjoint, non-empty, within ``available``."""
    avail = set(available if available is not None else os.sched_getaffinity(0))
    if spec == "auto":
        cpus = sorted(avail)
        if len(cpus) < 2:
            raise ValueError(f"--split-cpus needs at least 2 usable CPUs, this process may use {fmt(avail)}")
        half = (len(cpus) + 1) // 2
        return set(cpus[:half]), set(cpus[half:])
    server_s, sep, tool_s = spec.partition(":")
    if not sep:
        raise ValueError(f"--split-cpus {spec!r}: use auto or SERVER:TOOL, e.g. 0:1 or 0-1:2-3")
    server, tool = parse_list(server_s), parse_list(tool_s)
    if server & tool:
        raise ValueError(f"--split-cpus {spec!r}: the server and the tool share CPU(s) {fmt(server & tool)}")
    if not (server | tool) <= avail:
        raise ValueError(f"--split-cpus {spec!r}: CPU(s) {fmt((server | tool) - avail)} not usable here "
                         f"(usable: {fmt(avail)})")
    return server, tool


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc)."""
    kids, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += kids.get(pid, [])
    return out


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


def pin(pids: list[int], cpus: set[int]) -> int:
    """Set the affinity of every thread of ``pids``; return how many threads were pinned (gone ones skipped)."""
    n = 0
    for pid in pids:
        for tid in _threads(pid):
            try:
                os.sched_setaffinity(tid, cpus)
                n += 1
            except ProcessLookupError:
                continue
    return n


def postmaster_of(backend_pid: int) -> int:
    """The postmaster of a backend (its parent); ValueError when that process is not on this machine."""
    try:
        stat = Path(f"/proc/{backend_pid}/stat").read_text()
    except OSError as exc:
        raise ValueError(f"backend {backend_pid} is not a process of this machine: --split-cpus needs the server "
                         "here (the embedded one, or --target on localhost as the same user)") from exc
    return int(stat.rsplit(")", 1)[1].split()[1])


async def pin_server(admin_dsn: str, cpus: set[int]) -> dict:
    """Pin the server behind ``admin_dsn`` (postmaster and all its processes) to ``cpus``."""
    import asyncpg

    con = await asyncpg.connect(admin_dsn)
    try:  # while the backend is there to be looked at
        postmaster = postmaster_of(await con.fetchval("SELECT pg_backend_pid()"))
    finally:
        await con.close()
    pids = tree(postmaster)
    threads = pin(pids, cpus)
    return {"postmaster": postmaster, "processes": len(pids), "threads": threads, "cpus": fmt(cpus)}


def pin_tool(cpus: set[int]) -> dict:
    """Pin every thread of this process (and so what it starts from now on) to ``cpus``."""
    return {"pid": os.getpid(), "threads": pin([os.getpid()], cpus), "cpus": fmt(cpus)}


def affinity(pid: int = 0) -> str:
    """The CPU list ``pid`` (default: this thread) may run on."""
    return fmt(os.sched_getaffinity(pid))
