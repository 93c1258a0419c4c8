"""``python -m bench``: generate a synthetic HridaAI data dir, run the baselines and the ``migrate`` tool, report.

See bench/README.md. Exit code: 0 when every migrate run and verify succeeded (or --no-migrate), 1 otherwise.
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
from pathlib import Path

from bench import baselines, generate, migrate_runner, pgutil, report
from bench.generate import GenParams

HERE = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--chats", type=int, default=20_000, help="chat rows (full scale: 50000)")
    ap.add_argument("--narrow", type=int, default=200_000, help="channel `message` rows (full scale: 1000000)")
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--huge-chat", action="store_true", help="add one 30 MB chat")
    ap.add_argument("--runs", type=int, default=3, help="measured migrate runs (and ceiling repetitions); median")
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    ap.add_argument("--target", help="admin postgresql:// URI of a server to use instead of an embedded one; "
                                     "needs CREATEDB (databases bench_* are created and dropped)")
    ap.add_argument("--connections", type=int, default=2, help="COPY connections of the ceiling (= migrate's)")
    ap.add_argument("--naive-budget", type=float, default=10.0, help="seconds per table for naive/row-by-row")
    ap.add_argument("--row-by-row-rows", type=int, default=2000)
    ap.add_argument("--migrate-cmd", help="command to run instead of the `migrate` script (shell-split)")
    ap.add_argument("--verify", choices=("first", "all", "none"), default="first",
                    help="after which migrate runs to run (and time) `migrate verify`")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--no-migrate", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep per-run databases, work dirs and logs")
    return ap.parse_args(argv)


def log(msg: str) -> None:
    """Progress line on stderr (the results table goes to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def empty_baselines() -> dict:
    """Placeholder baselines when --no-baselines is given."""
    blank = {"rows_per_s": None, "mb_per_s": None, "scaled": False}
    return {t: {k: dict(blank) for k in ("ceiling", "naive", "row_by_row")} for t in pgutil.BENCH_TABLES}


async def migrate_runs(args, cmd, data_dir: Path, admin_dsn: str, scratch: Path) -> list[dict]:
    """Each run: fresh database + work dir, `migrate run`, then `migrate verify`. Stops at the first failure."""
    results = []
    for i in range(args.runs):
        dbname = f"bench_migrate_{i}"
        dsn = await pgutil.recreate_database(admin_dsn, dbname)
        work, logs = scratch / f"work-{i}", scratch / f"logs-{i}"
        logs.mkdir(parents=True)
        log(f"migrate run {i + 1}/{args.runs} -> database {dbname}")
        res = {"database": dbname, "run": await migrate_runner.run_migrate(cmd, data_dir, work, dsn, logs)}
        r = res["run"]
        log(f"  run: exit {r['exit_code']} in {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb'] or 0:.0f} MB")
        if not r["ok"]:
            log("  migrate run FAILED; its output ends with:\n" + migrate_runner.stderr_tail(r))
        elif args.verify == "all" or (args.verify == "first" and i == 0):
            res["verify"] = await migrate_runner.run_verify(cmd, data_dir, work, dsn, logs)
            v = res["verify"]
            log(f"  verify: exit {v['exit_code']} in {v['seconds']:.1f} s, peak RSS {v['peak_rss_mb'] or 0:.0f} MB")
            if not v["ok"]:
                log("  verify FAILED; its output ends with:\n" + migrate_runner.stderr_tail(v))
        results.append(res)
        if not args.keep:
            await pgutil.drop_database(admin_dsn, dbname)
            shutil.rmtree(work, ignore_errors=True)
        if not r["ok"]:
            log("  not repeating a failing migrate run")
            break
    return results


async def measure(args, admin_dsn: str, data_dir: Path, manifest: dict, scratch: Path) -> dict:
    """Baselines then migrate runs against one server; return the raw measurements."""
    stats = manifest["tables"]
    db_path = data_dir / "hridaai.db"
    server = await pgutil.server_info(admin_dsn)
    log(f"postgres {server['version']}, lz4 {'available' if server['lz4'] else 'NOT available'}")
    if args.no_baselines:
        base = empty_baselines()
    else:
        base = await baselines.run_all(admin_dsn, db_path, stats, runs=args.runs, connections=args.connections,
                                       naive_budget_s=args.naive_budget, rbr_rows=args.row_by_row_rows, log=log)
        base.pop("_server", None)
    runs: list[dict] = []
    cmd = shlex.split(args.migrate_cmd) if args.migrate_cmd else migrate_runner.default_command()
    if not args.no_migrate:
        log(f"migrate command: {' '.join(cmd)}")
        runs = await migrate_runs(args, cmd, data_dir, admin_dsn, scratch)
    return {"server": server, "baselines": base, "migrate_runs": runs, "migrate_cmd": cmd}


@contextlib.contextmanager
def postgres(target: str | None):
    """Yield an admin URI: --target as given, or an embedded pgserver for the duration."""
    if target:
        pgutil.with_database(target, "postgres")  # validates the URI form early
        log(f"postgres: using {pgutil.mask(target)}")
        yield target
    else:
        with pgutil.embedded_server(log=log) as uri:
            yield uri


def main(argv=None) -> int:
    """Entry point of ``python -m bench``."""
    args = parse_args(argv)
    t0 = time.perf_counter()
    params = GenParams(args.chats, args.narrow, args.users, args.seed, args.huge_chat)
    data_dir, manifest = generate.ensure_dataset(params, log=log)
    scratch = Path(tempfile.mkdtemp(prefix="bench-work-"))
    try:
        with postgres(args.target) as admin_dsn:
            raw = asyncio.run(measure(args, admin_dsn, data_dir, manifest, scratch))
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            log(f"kept work dirs and logs in {scratch}")
    summary = report.summarize(manifest["tables"], raw["baselines"], raw["migrate_runs"], os.cpu_count())
    header = (f"hridaai-migrate benchmark: {args.chats:,} chats, {args.narrow:,} narrow rows, seed {args.seed}"
              f"{', +30 MB chat' if args.huge_chat else ''}; PostgreSQL {raw['server']['version']} "
              f"(toast {'lz4' if raw['server']['lz4'] else 'pglz'}); {args.connections} connections; "
              f"median of {args.runs} runs")
    print(report.render(summary, header))
    doc = {"params": vars(args) | {"out": str(args.out)}, "dataset": manifest, "data_dir": str(data_dir),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
           "summary": summary, **raw, "bench_seconds": time.perf_counter() - t0}
    report.write_json(args.out, doc)
    log(f"results written to {args.out} (bench took {doc['bench_seconds']:.0f} s)")
    failed = any(not r["run"]["ok"] or not r.get("verify", {"ok": True})["ok"] for r in raw["migrate_runs"])
    return 1 if failed or (not args.no_migrate and not raw["migrate_runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
