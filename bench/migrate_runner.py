"""Run the ``migrate`` CLI as a child process: wall time, peak RSS, exit code, and per-table load windows.

Peak RSS comes from ``os.wait4`` on that very child (``ru_maxrss``: the largest of the child and the descendants it
waited for), so earlier children do not leak into the figure the way ``RUSAGE_CHILDREN`` would; a tiny launcher
process does the fork so the benchmark's own memory is not charged to the child (see LAUNCHER). The launcher also
samples the RSS summed over the child's whole process tree (its worker processes): ``peak_tree_rss_mb``, and each
process's own peak (VmHWM): ``per_process`` / ``rss_by_role`` (main, worker, resource_tracker, ...).

Per-table timing: from the tool's own JSON-lines ``load`` start/done events when it prints them; otherwise observed
from outside: while ``migrate run`` works, a separate connection samples the size of every table in ``public``
(heap + TOAST, ``pg_relation_size``) every ``POLL_S`` seconds, and a table's window runs from the last sample before
it started growing to the first sample at its final size (resolution ±POLL_S). Both are kept in the results.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from bench import cpu

POLL_S = 0.25
# HridaAI's own configuration variables: removed from the child's environment so a shell that happens to have them
# set cannot point the benchmark at a real installation. The flags we pass are the only configuration.
SCRUB_ENV = ("DATA_DIR", "DATABASE_URL", "VECTOR_DB", "PGVECTOR_DB_URL", "CHROMA_DATA_PATH", "CHROMA_HTTP_HOST",
             "CHROMA_HTTP_PORT", "DATABASE_PASSWORD")
SIZE_SQL = """
SELECT c.relname, pg_relation_size(c.oid) + coalesce(pg_relation_size(NULLIF(c.reltoastrelid, 0)), 0)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r'
"""


def default_command() -> list[str]:
    """The ``migrate`` console script next to this interpreter, else on PATH, else ``python -m migrator``."""
    local = Path(sys.executable).with_name("migrate")
    if local.exists():
        return [str(local)]
    found = shutil.which("migrate")
    return [found] if found else [sys.executable, "-m", "migrator"]


# The child is started by a fresh, small Python launcher rather than forked from this (possibly large) process:
# Linux charges the pre-exec copy of the parent's memory to the child's ru_maxrss, which would inflate peak RSS.
# It also samples, every TREE_S seconds, the RSS summed over the child and all its descendants (the tool's worker
# processes): what a container's memory limit sees, where ru_maxrss only gives the largest single process.
LAUNCHER = r"""
import json, os, subprocess, sys, threading, time
TREE_S = 0.2
t0, epoch = time.perf_counter(), time.time()
try:
    p = subprocess.Popen(sys.argv[2:])
except OSError as exc:
    print(f"could not start {sys.argv[2]}: {exc}", file=sys.stderr)
    sys.exit(127)
done, peak, procs = threading.Event(), [0, 0], {}
def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out
def tree_rss(root):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append((int(d), ppid))
    total, n, todo, now = 0, 0, [(root, None)], time.perf_counter() - t0
    while todo:
        pid, ppid = todo.pop()
        try:
            st = status(pid)
        except (OSError, ValueError, IndexError):
            continue
        if "VmRSS" in st:  # not a zombie
            total += st["VmRSS"] * 1024
            n += 1
            rec = procs.get(pid)
            if rec is None:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
                except OSError:
                    cmd = []
                rec = procs[pid] = {"pid": pid, "ppid": ppid, "cmd": cmd[:8], "first_s": round(now, 2), "hwm_kb": 0,
                                    "rss_kb": 0}
            rec["hwm_kb"] = max(rec["hwm_kb"], st.get("VmHWM", 0))
            rec["rss_kb"] = max(rec["rss_kb"], st["VmRSS"])
            rec["last_s"] = round(now, 2)
        todo += kids.get(pid, [])
    return total, n
def sample():
    while not done.wait(TREE_S):
        total, n = tree_rss(p.pid)
        peak[0], peak[1] = max(peak[0], total), max(peak[1], n)
if sys.platform.startswith("linux"):
    threading.Thread(target=sample, daemon=True).start()
_, status_, usage = os.wait4(p.pid, 0)
done.set()
code = os.waitstatus_to_exitcode(status_)
with open(sys.argv[1], "w") as f:
    json.dump({"exit_code": code, "seconds": time.perf_counter() - t0, "maxrss_kb": usage.ru_maxrss,
               "cpu_s": usage.ru_utime + usage.ru_stime, "root_pid": p.pid,
               "tree_rss_kb": peak[0] // 1024 or None, "processes": peak[1], "start_epoch": epoch,
               "per_process": sorted(procs.values(), key=lambda r: (r["first_s"], r["pid"]))}, f)
sys.exit(code if code >= 0 else 128 - code)
"""


def process_role(rec: dict, root_pid: int | None) -> str:
    """What a process of the child's tree is: ``main`` (the child itself), ``worker`` (a multiprocessing child),
    ``resource_tracker``, ``forkserver``, or the name of the program it runs."""
    if rec.get("pid") == root_pid:
        return "main"
    cmd = " ".join(rec.get("cmd") or [])
    for marker, role in (("resource_tracker", "resource_tracker"), ("forkserver", "forkserver"),
                         ("spawn_main", "worker"), ("multiprocessing", "worker")):
        if marker in cmd:
            return role
    return os.path.basename(rec["cmd"][0]) if rec.get("cmd") else "?"


def per_process(usage: dict) -> list[dict]:
    """Peak RSS (MB) of every process seen in the child's tree, from the launcher's samples: the larger of its last
    sampled VmHWM (its own high-water mark) and the largest VmRSS sampled; processes that lived less than one sample
    interval (0.2 s) are missed. The main process's figure is at least its VmHWM at its last sample."""
    root = usage.get("root_pid")
    return [{"pid": r["pid"], "role": process_role(r, root),
             "peak_rss_mb": round(max(r["hwm_kb"], r["rss_kb"]) / 1024, 1),
             "seen_s": [r.get("first_s"), r.get("last_s")], "cmd": " ".join(r.get("cmd") or [])[:200]}
            for r in usage.get("per_process") or []]


def rss_by_role(procs: list[dict]) -> dict[str, dict]:
    """{role: {"count", "max_mb", "peaks_mb" (largest first, at most 8)}} of per_process's list."""
    out: dict[str, dict] = {}
    for r in procs:
        out.setdefault(r["role"], []).append(r["peak_rss_mb"])
    return {role: {"count": len(v), "max_mb": max(v), "peaks_mb": sorted(v, reverse=True)[:8]}
            for role, v in out.items()}


def run_child(argv: list[str], log_prefix: Path, cwd: Path | None = None) -> dict:
    """Run ``argv`` to completion; return exit code, wall seconds, peak RSS (MB), CPU (the child with the
    descendants it reaped, i.e. the tool's worker processes; and the whole machine's busy core-seconds meanwhile)
    and the log file paths."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUB_ENV}
    out_path, err_path = log_prefix.with_suffix(".stdout"), log_prefix.with_suffix(".stderr")
    usage_path = log_prefix.with_suffix(".rusage.json")
    busy0 = cpu.busy_core_s()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        subprocess.run([sys.executable, "-c", LAUNCHER, str(usage_path), *argv], stdin=subprocess.DEVNULL,
                       stdout=out, stderr=err, env=env, cwd=cwd, check=False)
    busy = cpu.delta(busy0, cpu.busy_core_s())
    try:
        usage = json.loads(usage_path.read_text())
    except (OSError, ValueError):
        usage = {"exit_code": None, "seconds": 0.0, "maxrss_kb": None}
    rss = usage["maxrss_kb"] / 1024 if usage["maxrss_kb"] is not None else None
    tree = usage.get("tree_rss_kb")
    procs = per_process(usage)
    return {"exit_code": usage["exit_code"], "seconds": usage["seconds"], "peak_rss_mb": rss,
            "peak_tree_rss_mb": tree / 1024 if tree else None, "processes": usage.get("processes"),
            "per_process": procs, "rss_by_role": rss_by_role(procs),
            "start_epoch": usage.get("start_epoch"), "tool_core_s": usage.get("cpu_s"), "busy_core_s": busy,
            "stdout": str(out_path), "stderr": str(err_path), "ok": usage["exit_code"] == 0}


async def _poll_sizes(dsn: str, stop: asyncio.Event, samples: list) -> None:
    con = None
    while not stop.is_set():
        try:
            if con is None:
                con = await asyncpg.connect(dsn)
                await con.execute("SET lock_timeout = '50ms'")
            rows = await con.fetch(SIZE_SQL)
            samples.append((time.perf_counter(), {r[0]: r[1] for r in rows}))
        except (asyncpg.PostgresError, OSError):
            pass  # a table locked by DDL for a moment, or the database not ready: skip this tick
        try:
            await asyncio.wait_for(stop.wait(), POLL_S)
        except asyncio.TimeoutError:
            pass
    if con is not None:
        await con.close()


def table_windows(samples: list[tuple[float, dict]], t_start: float) -> dict[str, dict]:
    """Per table: seconds from the process start to the load start/end, and the window length."""
    out = {}
    names = {n for _, s in samples for n in s}
    for name in names:
        series = [(t, s.get(name, 0)) for t, s in samples]
        top = max(v for _, v in series)
        first_grow = next((i for i, (_, v) in enumerate(series) if v > series[0][1]), None)
        if top == 0 or first_grow is None:
            continue
        begin = series[first_grow - 1][0] if first_grow > 0 else t_start
        end = next(t for t, v in series if v == top)
        partial = sum(1 for _, v in series if 0 < v < top)
        out[name] = {"start_s": round(begin - t_start, 3), "end_s": round(end - t_start, 3),
                     "window_s": max(end - begin, POLL_S), "bytes_on_disk": top, "partial_samples": partial}
        if partial == 0 and top > (8 << 20):  # appeared complete (e.g. loaded in the transaction that created it)
            out[name]["window_s"] = None
    return out


def event_windows(*paths: str) -> dict[str, dict]:
    """Per-table load windows from the tool's JSON-lines progress events, when it emits them (a table loaded in
    parts: first part's start to last part's done).

    Uses ``{"stage": "load", "unit": T, "state": "start"|"done", "ts": epoch}`` lines (``migrate run`` writes them to
    stderr when that is not a terminal); returns {} when there are none.
    """
    spans: dict[str, dict] = {}
    for path in paths:
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if not line.startswith("{"):
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("stage") != "load" or "unit" not in ev or ev.get("state") not in ("start", "done"):
                continue
            span = spans.setdefault(ev["unit"].split("#", 1)[0], {})  # parts of a table: `<table>#<k>`
            if ev["state"] == "start":
                span.setdefault("start_ts", ev.get("ts"))
            else:
                span["end_ts"] = ev.get("ts")
    return {unit: {"window_s": max(s["end_ts"] - s["start_ts"], 1e-3)} for unit, s in spans.items()
            if s.get("start_ts") is not None and s.get("end_ts") is not None}


def event_phases(path: str, start_epoch: float | None, seconds: float) -> dict:
    """Split the run's wall time by its progress events: before the first load, loading, finalize, after.

    With a vector store (``load`` units ``vector:<collection>``) also: ``snapshot_s`` / ``plan_s`` (from the
    ``snapshot`` / ``plan`` start events to the next stage's start) within before the load, and the windows of
    the two lanes within the load, which run at once: ``tables_s`` (first to last event of the other units) and
    ``vectors_s``, each starting ``tables_from_s`` / ``vectors_from_s`` after the load's start.
    """
    try:
        evs = [json.loads(x) for x in Path(path).read_text(errors="replace").splitlines() if x.startswith("{")]
    except (OSError, ValueError):
        return {}
    load = [e["ts"] for e in evs if e.get("stage") == "load" and "ts" in e]
    fin = [e["ts"] for e in evs if e.get("stage") == "finalize" and "ts" in e]
    if not start_epoch or not load:
        return {}
    first, end_load = min(load), max(load)
    end_fin = max(fin) if fin else end_load
    out = {"before_load_s": first - start_epoch, "load_s": end_load - first,
           "finalize_s": end_fin - end_load, "after_s": start_epoch + seconds - end_fin}
    vec = [e["ts"] for e in evs if e.get("stage") == "load" and "ts" in e
           and str(e.get("unit", "")).startswith("vector:")]
    if vec:
        starts = {e["stage"]: e["ts"] for e in reversed(evs) if e.get("state") == "start" and "ts" in e
                  and e.get("stage") in ("snapshot", "plan", "schema")}
        if "snapshot" in starts and "plan" in starts:
            out["snapshot_s"] = starts["plan"] - starts["snapshot"]
            out["plan_s"] = starts.get("schema", first) - starts["plan"]
        tab = [e["ts"] for e in evs if e.get("stage") == "load" and "ts" in e
               and not str(e.get("unit", "")).startswith("vector:")]
        if tab:
            out["tables_from_s"], out["tables_s"] = min(tab) - first, max(tab) - min(tab)
        out["vectors_from_s"], out["vectors_s"] = min(vec) - first, max(vec) - min(vec)
    return out


async def run_migrate(cmd: list[str], data_dir: Path, work_dir: Path, dsn: str, logs: Path) -> dict:
    """``migrate run`` while sampling table sizes; returns run_child's dict plus ``tables`` windows."""
    argv = cmd + ["run", "--data-dir", str(data_dir), "--work-dir", str(work_dir), "--target", dsn]
    stop, samples = asyncio.Event(), []
    poller = asyncio.create_task(_poll_sizes(dsn, stop, samples))
    t0 = time.perf_counter()
    try:
        res = await asyncio.to_thread(run_child, argv, logs / "migrate-run")
    finally:
        stop.set()
        await poller
    polled, events = table_windows(samples, t0), event_windows(res["stderr"], res["stdout"])
    res["samples"] = len(samples)
    res["tables_polled"] = polled
    res["tables_events"] = events
    # The tool's own start/done events are exact; the size poll (±POLL_S) is the fallback.
    res["phases"] = event_phases(res["stderr"], res.get("start_epoch"), res["seconds"])
    res["tables"] = {t: {**w, "source": "events"} for t, w in events.items()}
    for t, w in polled.items():
        res["tables"].setdefault(t, {**w, "source": "poll"})
    return res


async def run_verify(cmd: list[str], data_dir: Path, work_dir: Path, dsn: str, logs: Path) -> dict:
    """``migrate verify`` against the database ``run`` just filled."""
    argv = cmd + ["verify", "--data-dir", str(data_dir), "--work-dir", str(work_dir), "--target", dsn]
    return await asyncio.to_thread(run_child, argv, logs / "migrate-verify")


def stderr_tail(res: dict, lines: int = 25) -> str:
    """Last lines of a child's stderr (or stdout when stderr is empty), for the console."""
    for key in ("stderr", "stdout"):
        try:
            text = Path(res[key]).read_text(errors="replace").strip()
        except OSError:
            continue
        if text:
            return "\n".join(text.splitlines()[-lines:])
    return "(no output)"
