"""What both bench entry points (``python -m bench``, ``python -m bench.vectors``) share, written once.

Their common options, the progress log, the PostgreSQL server and scratch dir they measure with, the timed
``migrate run`` / ``migrate verify`` children (one fresh database and work dir each) and the results file. An entry
point brings only what differs (a ``Plan``): its dataset, its baselines, how it launches and reads a ``migrate``
child, and its report (bench/report.py, bench/vector_report.py).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

from bench import cpuset, migrate_runner, pgutil, report

Log = Callable[[str], None]
# (command, data dir, work dir, database URI, log dir) -> migrate_runner.run_child's dict (and what the plan adds)
Child = Callable[[list[str], Path, Path, str, Path], Awaitable[dict]]
# a finished child's dict -> text appended to its progress line
Note = Callable[[dict], str]
# (session, run index, database URI, the run's result so far) -> keys added to that result; runs after a successful
# `migrate run` (and its verify), while its database still exists
AfterRun = Callable[["Session", int, str, dict], Awaitable[dict]]
FAILED = {"run": "migrate run", "verify": "verify"}  # a failed child's name in the progress log


def logger(name: str) -> Log:
    """Progress lines ``[name HH:MM:SS] ...`` on stderr, so stdout carries only the results table."""
    def log(msg: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
    return log


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """An entry point's parser, before its own options and then ``add_common_options``."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def add_common_options(ap: argparse.ArgumentParser, *, out: Path, skips: str, needs: str) -> None:
    """The options that mean the same in both entry points: what ``Session`` and ``finish`` read.

    ``out`` is the default results file, ``skips`` what --no-baselines leaves out, ``needs`` what --target's server
    must allow (and which databases the bench creates there).
    """
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--connections", type=int, default=2, help="COPY connections of the ceiling (= migrate's --jobs)")
    ap.add_argument("--verify", choices=("first", "all", "none"), default="first",
                    help="after which migrate runs to run (and time) `migrate verify`")
    ap.add_argument("--no-baselines", action="store_true", help=f"skip {skips}")
    ap.add_argument("--no-migrate", action="store_true")
    ap.add_argument("--migrate-cmd", help="command to run instead of the `migrate` script (shell-split)")
    ap.add_argument("--target", help=f"admin postgresql:// URI of a server to use instead of an embedded one; "
                                     f"needs {needs}")
    ap.add_argument("--split-cpus", nargs="?", const="auto", metavar="SERVER:TOOL",
                    help="pin the PostgreSQL server's processes and the tool (the migrate children, the baselines' "
                         "client: this process) to disjoint cores; alone = first half of the cores for the server "
                         "(1 + 1 on 2 cores), or e.g. 0:1, 0-1:2-3 (Linux; the server must run on this machine)")
    ap.add_argument("--out", type=Path, default=out)
    ap.add_argument("--keep", action="store_true", help="keep per-run databases, work dirs and logs (path printed)")


def _no_note(_: dict) -> str:
    """Nothing to add: `python -m bench`'s progress lines are the bare exit, time and RSS."""
    return ""


@dataclass(frozen=True)
class Plan:
    """What an entry point measures besides what the harness does the same for both."""
    scratch: str                  # prefix of the temporary dir for work dirs and the children's logs
    databases: str                # prefix of the per-run database names (<databases><i>)
    runs: int                     # `migrate run`s, each into a fresh database and work dir
    baselines: Callable[[Session, dict], Awaitable[dict]]  # (session, server info) -> raw baselines
    run: Child = migrate_runner.run_migrate
    verify: Child = migrate_runner.run_verify
    run_note: Note = _no_note
    verify_note: Note = _no_note
    after_run: AfterRun | None = None  # e.g. `python -m bench`'s ingest ceiling on the first run's database


@dataclass(frozen=True)
class Session:
    """One measurement: the options, log and dataset, on one server with one scratch dir."""
    args: argparse.Namespace
    log: Log
    data_dir: Path
    manifest: dict
    admin_dsn: str
    scratch: Path

    async def measure(self, plan: Plan) -> dict:
        """Baselines then migrate runs against the one server; the raw measurements."""
        server = await pgutil.server_info(self.admin_dsn)
        self.log(f"postgres {server['version']}, lz4 {'available' if server['lz4'] else 'NOT available'}")
        before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        if getattr(self.args, "split_cpus", None):
            server["cpu_split"] = await self.split_cpus()
        try:
            return await self._measure(plan, server)
        finally:
            if server.get("cpu_split") and before:
                cpuset.pin_tool(before)

    async def split_cpus(self) -> dict:
        """--split-cpus: the server's processes on one set of cores, this process (and so every child it starts
        from now on) on the other."""
        srv, tool = cpuset.split_spec(self.args.split_cpus)
        out = {"server": await cpuset.pin_server(self.admin_dsn, srv), "tool": cpuset.pin_tool(tool)}
        self.log(f"CPU split: PostgreSQL (postmaster {out['server']['postmaster']}, {out['server']['processes']} "
                 f"processes) on CPU {out['server']['cpus']}, the tool on CPU {out['tool']['cpus']}")
        return out

    async def _measure(self, plan: Plan, server: dict) -> dict:
        base = await plan.baselines(self, server)
        cmd = shlex.split(self.args.migrate_cmd) if self.args.migrate_cmd else migrate_runner.default_command()
        runs: list[dict] = []
        if not self.args.no_migrate:
            self.log(f"migrate command: {' '.join(cmd)}")
            runs = await self.migrate_runs(plan, cmd)
        return {"server": server, "baselines": base, "migrate_runs": runs, "migrate_cmd": cmd}

    async def migrate_runs(self, plan: Plan, cmd: list[str]) -> list[dict]:
        """``plan.runs`` runs; stops at the first failure, since repeating it would only fail again."""
        results = []
        for i in range(plan.runs):
            results.append(await self._migrate_once(plan, cmd, i))
            if not results[-1]["run"]["ok"]:
                self.log("  not repeating a failing migrate run")
                break
        return results

    async def _migrate_once(self, plan: Plan, cmd: list[str], i: int) -> dict:
        """Fresh database + work dir, `migrate run`, then (per --verify) `migrate verify`, then ``plan.after_run``;
        cleaned up unless --keep."""
        dbname = f"{plan.databases}{i}"
        dsn = await pgutil.recreate_database(self.admin_dsn, dbname)
        work, logs = self.scratch / f"work-{i}", self.scratch / f"logs-{i}"
        logs.mkdir(parents=True)
        self.log(f"migrate run {i + 1}/{plan.runs} -> database {dbname}")
        await pgutil.settle(self.admin_dsn)
        res = {"database": dbname, "run": await plan.run(cmd, self.data_dir, work, dsn, logs)}
        if self._reported("run", res["run"], plan.run_note) and self._verifies(i):
            res["verify"] = await plan.verify(cmd, self.data_dir, work, dsn, logs)
            self._reported("verify", res["verify"], plan.verify_note)
        if plan.after_run is not None and res["run"]["ok"]:
            res.update(await plan.after_run(self, i, dsn, res))
        if not self.args.keep:
            await pgutil.drop_database(self.admin_dsn, dbname)
            shutil.rmtree(work, ignore_errors=True)
        return res

    def _verifies(self, i: int) -> bool:
        """--verify: after every run, after the first only (verify takes about as long as run), or never."""
        return self.args.verify == "all" or (self.args.verify == "first" and i == 0)

    def _reported(self, what: str, child: dict, note: Note) -> bool:
        """Log the child's exit, wall time and peak RSS (and on failure its output's tail); whether it succeeded."""
        self.log(f"  {what}: exit {child['exit_code']} in {child['seconds']:.1f} s, "
                 f"peak RSS {child['peak_rss_mb'] or 0:.0f} MB{note(child)}")
        if not child["ok"]:
            self.log(f"  {FAILED[what]} FAILED; its output ends with:\n" + migrate_runner.stderr_tail(child))
        return child["ok"]


@contextlib.contextmanager
def postgres(target: str | None, log: Log):
    """Yield an admin URI: --target as given, or an embedded PostgreSQL for the duration."""
    if target:
        pgutil.with_database(target, "postgres")  # validates the URI form early
        log(f"postgres: using {pgutil.mask(target)}")
        yield target
    else:
        with pgutil.embedded_server(log=log) as uri:
            yield uri


@contextlib.contextmanager
def scratch_dir(prefix: str, keep: bool, log: Log):
    """A temporary dir for the runs' work dirs and logs; deleted afterwards unless --keep (then its path is logged)."""
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield scratch
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            log(f"kept work dirs and logs in {scratch}")


def measure(args: argparse.Namespace, log: Log, data_dir: Path, manifest: dict, plan: Plan) -> dict:
    """The raw measurements of ``plan`` on the dataset: one server, one scratch dir, for the duration."""
    with scratch_dir(plan.scratch, args.keep, log) as scratch, postgres(args.target, log) as admin_dsn:
        return asyncio.run(Session(args, log, data_dir, manifest, admin_dsn, scratch).measure(plan))


def machine() -> dict:
    """What the figures were measured on (the results file keeps it next to them)."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def finish(args: argparse.Namespace, log: Log, t0: float, doc: dict, raw: dict) -> int:
    """Write the results file (options, ``doc``, the raw measurements, the bench's own time); the exit code.

    1 when a migrate run or verify failed, or no run happened although one was asked for; else 0.
    """
    doc = {"params": vars(args) | {"out": str(args.out)}, **doc, **raw, "bench_seconds": time.perf_counter() - t0}
    report.write_json(args.out, doc)
    log(f"results written to {args.out} (bench took {doc['bench_seconds']:.0f} s)")
    failed = any(not r["run"]["ok"] or not r.get("verify", {"ok": True})["ok"] for r in raw["migrate_runs"])
    return 1 if failed or (not args.no_migrate and not raw["migrate_runs"]) else 0
