"""``python -m bench.vectors``: the vector path (Chroma -> pgvector ``document_chunk``) against what is possible.

Generates (once, cached) a HridaAI data dir whose ``vector_db/`` is a real Chroma store, then on one PostgreSQL:
chromadb read rate, the COPY ceiling, ``migrate run`` + ``migrate verify`` end to end. See bench/README.md
("Vectors"). Exit code: 0 when every migrate run and verify succeeded (or --no-migrate), 1 otherwise.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import migrate_runner, pgutil, report, vector_baselines, vector_data
from bench.vector_data import VecParams

HERE = Path(__file__).resolve().parent
TABLE_DIM = 1536  # PGVECTOR_INITIALIZE_MAX_VECTOR_LENGTH's default: what migrate pads to without configuration
VECTOR_PREFIX = "vector:"


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(prog="python -m bench.vectors", description=__doc__,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--vectors", type=int, default=50_000, help="vectors in the store (full scale: 200000)")
    ap.add_argument("--collections", type=int, default=20)
    ap.add_argument("--dim", type=int, default=384, help="dimension of the stored vectors")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3, help="repetitions of the chromadb read and the ceiling; median")
    ap.add_argument("--migrate-runs", type=int, default=1, help="`migrate run`s (each into a fresh database); median")
    ap.add_argument("--verify", choices=("first", "all", "none"), default="first",
                    help="after which migrate runs to run (and time) `migrate verify`")
    ap.add_argument("--connections", type=int, default=2, help="COPY connections of the ceiling (= migrate's --jobs)")
    ap.add_argument("--no-variants", action="store_true",
                    help="skip the extra ceilings (1 connection; primary key only), one load each")
    ap.add_argument("--no-baselines", action="store_true", help="skip the chromadb read and the ceilings")
    ap.add_argument("--no-migrate", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results-vectors.json")
    ap.add_argument("--target", help="admin postgresql:// URI of a server to use instead of an embedded one; "
                                     "needs CREATEDB and pgvector (databases bench_v* are created and dropped)")
    ap.add_argument("--migrate-cmd", help="command to run instead of the `migrate` script (shell-split)")
    ap.add_argument("--keep", action="store_true", help="keep work dirs and logs (path printed)")
    return ap.parse_args(argv)


def log(msg: str) -> None:
    """Progress line on stderr (the results table goes to stdout)."""
    print(f"[bench.vectors {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _ratio(a, b):
    return a / b if a is not None and b else None


# --- migrate's events -------------------------------------------------------------------------------------------


def read_events(path: str | Path) -> list[dict]:
    """The JSON-lines progress events of a child's stderr (other lines ignored)."""
    out = []
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def vector_timeline(events: list[dict], start_epoch: float | None, seconds: float) -> dict:
    """Vector load window and phases of a `migrate run` from its events.

    ``load`` events of units ``vector:<collection>`` give per-collection windows (start -> done, rows of the done
    event); the vector part is first vector start -> last vector done. Phases split the wall time: before the
    vectors (start-up, snapshot, plan incl. its full scan of the store, schema, relational tables), vector load,
    vector index (up to the ``finalize`` ``vector-index`` event), the rest of finalize, and after (exit, report).
    """
    cols: dict[str, dict] = {}
    for ev in events:
        unit = ev.get("unit")
        if ev.get("stage") != "load" or not isinstance(unit, str) or not unit.startswith(VECTOR_PREFIX):
            continue
        c = cols.setdefault(unit[len(VECTOR_PREFIX):], {})
        if ev.get("state") == "start":
            c.setdefault("start_ts", ev.get("ts"))
        elif ev.get("state") == "done":
            c["end_ts"], c["rows"] = ev.get("ts"), ev.get("rows")
    done = {n: c for n, c in cols.items() if c.get("start_ts") is not None and c.get("end_ts") is not None}
    out: dict = {"collections": {n: {"rows": c["rows"], "window_s": round(c["end_ts"] - c["start_ts"], 3),
                                     "vectors_per_s": _ratio(c["rows"], max(c["end_ts"] - c["start_ts"], 1e-3))}
                                 for n, c in done.items()}}
    if not done:
        return out
    first = min(c["start_ts"] for c in done.values())
    last = max(c["end_ts"] for c in done.values())
    rows = sum(c["rows"] or 0 for c in done.values())
    out.update({"vectors": rows, "load_window_s": last - first, "vectors_per_s": _ratio(rows, max(last - first, 1e-3))})
    idx = [e["ts"] for e in events if e.get("stage") == "finalize" and e.get("step") == "vector-index" and "ts" in e]
    fin = [e["ts"] for e in events if e.get("stage") == "finalize" and "ts" in e]
    sec = [e["ts"] for e in events
           if e.get("stage") == "finalize" and e.get("step") == "vector-secondary-indexes" and "ts" in e]
    idx_ts = idx[0] if idx else last
    sec_ts = sec[0] if sec else last
    fin_ts = max(fin) if fin else idx_ts
    # what the ceiling does (COPY into a table whose secondary indexes exist) = load + secondary index builds
    out["load_and_secondary_s"] = sec_ts - first
    out["load_and_secondary_vectors_per_s"] = _ratio(rows, max(sec_ts - first, 1e-3))
    if start_epoch:
        out["phases_s"] = {"before_vectors_s": first - start_epoch, "vector_load_s": last - first,
                           "secondary_indexes_s": sec_ts - last, "vector_index_s": idx_ts - sec_ts,
                           "rest_of_finalize_s": fin_ts - idx_ts, "after_s": start_epoch + seconds - fin_ts}
    out["vector_index"] = next((e.get("detail") for e in events if e.get("step") == "vector-index"), None)
    return out


def verify_summary(stdout_path: str) -> dict:
    """ok / vectors section (recall, self-retrieval, problems) of `migrate verify --json`."""
    try:
        doc = json.loads(Path(stdout_path).read_text())
    except (OSError, ValueError):
        return {}
    vec = doc.get("vectors") or {}
    return {"ok": doc.get("ok"), "problems": (doc.get("problems") or [])[:10],
            "vector_problems": (vec.get("problems") or [])[:10], "recall_at_10": vec.get("recall_at_10"),
            "self_retrieval": vec.get("self_retrieval"),
            "collections_matching": sum(1 for c in (vec.get("collections") or {}).values() if c.get("match")),
            "collections": len(vec.get("collections") or {})}


# --- orchestration ----------------------------------------------------------------------------------------------


async def baselines(args, admin_dsn: str, data_dir: Path, scratch: Path, lz4: bool) -> dict:
    """chromadb read (--runs), then the COPY ceiling (--runs) and its variants (one load each)."""
    store = scratch / "chroma-read"
    shutil.copytree(data_dir / "vector_db", store)
    log(f"chromadb read: get(include=[embeddings, documents, metadatas]) pages of {vector_baselines.PAGE}, "
        f"{args.runs} runs")
    read, pages = await asyncio.to_thread(vector_baselines.chroma_read, store, args.runs, log)
    t0 = time.perf_counter()
    batches, n = vector_baselines.prepare_records(pages, TABLE_DIM)
    del pages
    vector_data._release_chroma()
    gc.collect()
    log(f"ceiling rows prepared in {time.perf_counter() - t0:.1f} s ({n:,} rows, vector({TABLE_DIM}))")
    dsn = await pgutil.recreate_database(admin_dsn, "bench_vceiling")
    out = {"chroma_read": read}
    try:
        out["ceiling"] = await vector_baselines.ceiling(dsn, batches, n, runs=args.runs, connections=args.connections,
                                                        dimension=TABLE_DIM, lz4=lz4, log=log,
                                                        label=f"ceiling ({args.connections} connections)")
        if not args.no_variants:
            out["ceiling_1_connection"] = await vector_baselines.ceiling(
                dsn, batches, n, runs=1, connections=1, dimension=TABLE_DIM, lz4=lz4, log=log,
                label="ceiling (1 connection)")
            out["ceiling_pk_only"] = await vector_baselines.ceiling(
                dsn, batches, n, runs=1, connections=args.connections, dimension=TABLE_DIM, lz4=lz4, indexes=False,
                log=log, label=f"ceiling (primary key only, {args.connections} connections)")
    finally:
        await pgutil.drop_database(admin_dsn, "bench_vceiling")
        shutil.rmtree(store, ignore_errors=True)
    return out


async def migrate_runs(args, cmd, data_dir: Path, admin_dsn: str, scratch: Path) -> list[dict]:
    """Each run: fresh database + work dir, `migrate run`, then (per --verify) `migrate verify`."""
    results = []
    for i in range(args.migrate_runs):
        dbname = f"bench_vmigrate_{i}"
        dsn = await pgutil.recreate_database(admin_dsn, dbname)
        work, logs = scratch / f"work-{i}", scratch / f"logs-{i}"
        logs.mkdir(parents=True)
        common = ["--data-dir", str(data_dir), "--work-dir", str(work), "--target", dsn, "--log-format", "json"]
        log(f"migrate run {i + 1}/{args.migrate_runs} -> database {dbname}")
        epoch = time.time()
        r = await asyncio.to_thread(migrate_runner.run_child, cmd + ["run", *common], logs / "migrate-run")
        r["vectors"] = vector_timeline(read_events(r["stderr"]), r.get("start_epoch") or epoch, r["seconds"])
        res = {"database": dbname, "run": r}
        v = r["vectors"]
        log(f"  run: exit {r['exit_code']} in {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb'] or 0:.0f} MB; "
            f"vector load {v.get('vectors', 0):,} in {v.get('load_window_s') or 0:.1f} s "
            f"({v.get('vectors_per_s') or 0:,.0f}/s)")
        if not r["ok"]:
            log("  migrate run FAILED; its output ends with:\n" + migrate_runner.stderr_tail(r))
        elif args.verify == "all" or (args.verify == "first" and i == 0):
            ver = await asyncio.to_thread(migrate_runner.run_child, cmd + ["verify", *common, "--json"],
                                          logs / "migrate-verify")
            ver["report"] = verify_summary(ver["stdout"])
            res["verify"] = ver
            log(f"  verify: exit {ver['exit_code']} in {ver['seconds']:.1f} s, peak RSS "
                f"{ver['peak_rss_mb'] or 0:.0f} MB, recall@10 {ver['report'].get('recall_at_10')}")
            if not ver["ok"]:
                log("  verify FAILED; its output ends with:\n" + migrate_runner.stderr_tail(ver))
        results.append(res)
        if not args.keep:
            await pgutil.drop_database(admin_dsn, dbname)
            shutil.rmtree(work, ignore_errors=True)
        if not r["ok"]:
            log("  not repeating a failing migrate run")
            break
    return results


def summarize(manifest: dict, base: dict, runs: list[dict]) -> dict:
    """Medians and ratios for the table and the JSON."""
    n = manifest["vectors"]
    ok = [r for r in runs if r["run"]["ok"]]
    read = (base.get("chroma_read") or {}).get("vectors_per_s")
    ceil = (base.get("ceiling") or {}).get("vectors_per_s")
    load_rate = report.median([r["run"]["vectors"].get("vectors_per_s") for r in ok])
    run_s = report.median([r["run"]["seconds"] for r in ok])
    ver = [r["verify"] for r in ok if r.get("verify")]
    ver_s = report.median([v["seconds"] for v in ver])
    lines = []

    def line(name, rate, seconds, note=""):
        lines.append({"name": name, "vectors_per_s": rate, "seconds": seconds, "vs_ceiling": _ratio(rate, ceil),
                      "vs_chroma_read": _ratio(rate, read), "note": note})

    for key, name in (("chroma_read", "chromadb read (get, pages of 1000)"),
                      ("ceiling", f"ceiling: COPY prepared rows, {(base.get('ceiling') or {}).get('connections')} "
                                  "conn, same DDL"),
                      ("ceiling_1_connection", "ceiling: 1 connection, same DDL"),
                      ("ceiling_pk_only", "ceiling: primary key only (no btree/GIN)")):
        if base.get(key):
            line(name, base[key]["vectors_per_s"], base[key]["seconds"])
    if ok:
        line("migrate run: vector load window", load_rate,
             report.median([r["run"]["vectors"].get("load_window_s") for r in ok]), "read+convert+COPY, from its events")
        both_s = report.median([r["run"]["vectors"].get("load_and_secondary_s") for r in ok])
        line("migrate run: load + secondary indexes", _ratio(n, both_s), both_s,
             "what the ceiling does: COPY with the btree/GIN indexes in place")
        line("migrate run: whole wall time", _ratio(n, run_s), run_s, "snapshot, plan, load, index, analyze")
    if ver:
        line("migrate verify: wall time", _ratio(n, ver_s), ver_s)
    phases = {k: report.median([r["run"]["vectors"].get("phases_s", {}).get(k) for r in ok])
              for k in ("before_vectors_s", "vector_load_s", "secondary_indexes_s", "vector_index_s",
                      "rest_of_finalize_s", "after_s")}
    return {"vectors": n, "collections": len(manifest["collections"]), "lines": lines,
            "migrate": {"runs": len(runs), "succeeded": len(ok), "run_seconds": run_s,
                        "vector_load_vectors_per_s": load_rate, "phases_s": phases,
                        "peak_rss_mb": report.median([r["run"]["peak_rss_mb"] for r in ok]),
                        "peak_tree_rss_mb": report.median([r["run"].get("peak_tree_rss_mb") for r in ok]),
                        "busy_core_s": report.median([r["run"].get("busy_core_s") for r in ok]),
                        "tool_core_s": report.median([r["run"].get("tool_core_s") for r in ok]),
                        "verify_seconds": ver_s, "verify_ok": [v["ok"] for v in ver],
                        "verify_peak_rss_mb": report.median([v["peak_rss_mb"] for v in ver]),
                        "verify_peak_tree_rss_mb": report.median([v.get("peak_tree_rss_mb") for v in ver]),
                        "recall_at_10": report.median([v["report"].get("recall_at_10") for v in ver]),
                        "self_retrieval": ver[0]["report"].get("self_retrieval") if ver else None,
                        "vs_ceiling": _ratio(load_rate, ceil), "vs_chroma_read": _ratio(load_rate, read)}}


def _fmt(v, digits=0, suffix=""):
    if v is None:
        return "-"
    return f"{v:,.{digits}f}{suffix}"


def _cpu_line(m: dict) -> list[str]:
    """The run's CPU split like `python -m bench` prints it (nothing off Linux)."""
    busy, tool = m.get("busy_core_s"), m.get("tool_core_s")
    if busy is None or tool is None:
        return []
    return [f"  CPU: {_fmt(busy, 1)} busy core-seconds on {os.cpu_count()} cores: tool {_fmt(tool, 1)}, "
            f"server and the rest {_fmt(busy - tool, 1)}"]


def render(summary: dict, header: str) -> str:
    """The human-readable table."""
    cols = ("", "vectors/s", "seconds", "÷ceiling", "÷chroma read")
    body = [(ln["name"], _fmt(ln["vectors_per_s"]), _fmt(ln["seconds"], 1), _fmt(ln["vs_ceiling"], 2, "x"),
             _fmt(ln["vs_chroma_read"], 2, "x")) for ln in summary["lines"]]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(cols)]
    out = [header, ""]
    out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cols, widths))))
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(b, widths))) for b in body]
    m = summary["migrate"]
    if m["runs"]:
        out += ["",
                f"migrate run   : {m['succeeded']}/{m['runs']} ok; median wall {_fmt(m['run_seconds'], 1, ' s')}, "
                f"peak RSS {_fmt(m['peak_rss_mb'], 0, ' MB')} (largest process; all processes together "
                f"{_fmt(m.get('peak_tree_rss_mb'), 0, ' MB')})",
                "  phases (from its events): " + ", ".join(
                    f"{k[:-2].replace('_', ' ')} {_fmt(v, 1, ' s')}" for k, v in m["phases_s"].items()),
                *_cpu_line(m),
                f"migrate verify: wall {_fmt(m['verify_seconds'], 1, ' s')}, peak RSS "
                f"{_fmt(m['verify_peak_rss_mb'], 0, ' MB')} (together {_fmt(m.get('verify_peak_tree_rss_mb'), 0, ' MB')})"
                f", exit 0 in {sum(bool(x) for x in m['verify_ok'])}/"
                f"{len(m['verify_ok'])}, recall@10 {m['recall_at_10']}, self-retrieval {m['self_retrieval']}"]
    out += ["",
            "÷ceiling / ÷chroma read: rate of the line divided by the (first) ceiling's / the chromadb read's.",
            "The vector load window runs from migrate's first `vector:` unit start event to its last done event;",
            "migrate builds the btree/GIN indexes after it (the ceiling COPYs with them in place), then the vector",
            "index, which the ceiling does not build at all."]
    return "\n".join(out)


@contextlib.contextmanager
def _postgres(target: str | None):
    """Yield an admin URI: --target as given, or an embedded pgserver for the duration."""
    if target:
        pgutil.with_database(target, "postgres")  # validates the URI form early
        log(f"postgres: using {pgutil.mask(target)}")
        yield target
    else:
        with pgutil.embedded_server(log=log) as uri:
            yield uri


async def measure(args, admin_dsn: str, data_dir: Path, manifest: dict, scratch: Path) -> dict:
    """Baselines then migrate runs against one server; return the raw measurements."""
    server = await pgutil.server_info(admin_dsn)
    log(f"postgres {server['version']}, lz4 {'available' if server['lz4'] else 'NOT available'}")
    base = {} if args.no_baselines else await baselines(args, admin_dsn, data_dir, scratch, server["lz4"])
    cmd = shlex.split(args.migrate_cmd) if args.migrate_cmd else migrate_runner.default_command()
    runs: list[dict] = []
    if not args.no_migrate:
        log(f"migrate command: {' '.join(cmd)}")
        runs = await migrate_runs(args, cmd, data_dir, admin_dsn, scratch)
    return {"server": server, "baselines": base, "migrate_runs": runs, "migrate_cmd": cmd}


def source_state() -> dict:
    """The commit of the checkout and its uncommitted files under migrator/ (the editable `migrate` runs them)."""
    import subprocess

    def git(*a):
        try:
            return subprocess.run(["git", "-C", str(HERE.parent), *a], capture_output=True, text=True,
                                  timeout=10).stdout.rstrip("\n")
        except (OSError, subprocess.SubprocessError):
            return None

    dirty = git("status", "--porcelain", "--", "migrator")
    return {"commit": git("rev-parse", "HEAD"), "migrator_uncommitted": dirty.splitlines() if dirty else []}


def main(argv=None) -> int:
    """Entry point of ``python -m bench.vectors``."""
    args = parse_args(argv)
    t0 = time.perf_counter()
    for k in [k for k in os.environ if k.startswith(("PGVECTOR_", "CHROMA_"))]:
        os.environ.pop(k)  # the child must pad to the default 1536 and read only --data-dir's store
    load0 = os.getloadavg()
    source = source_state()
    params = VecParams(args.vectors, args.collections, args.dim, args.seed)
    data_dir, manifest = vector_data.ensure_dataset(params, log=log)
    scratch = Path(tempfile.mkdtemp(prefix="bench-vectors-"))
    try:
        with _postgres(args.target) as admin_dsn:
            raw = asyncio.run(measure(args, admin_dsn, data_dir, manifest, scratch))
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            log(f"kept work dirs and logs in {scratch}")
    summary = summarize(manifest, raw["baselines"], raw["migrate_runs"])
    load1 = os.getloadavg()
    header = (f"hridaai-migrate vector benchmark: {manifest['vectors']:,} vectors ({args.dim}-d, padded to "
              f"vector({TABLE_DIM})), {len(manifest['collections'])} collections, seed {args.seed}; PostgreSQL "
              f"{raw['server']['version']}; chromadb {manifest['chromadb']}; median of {args.runs} (baselines) / "
              f"{args.migrate_runs} (migrate) runs; load average {load0[0]:.1f} -> {load1[0]:.1f} on "
              f"{os.cpu_count()} CPUs")
    print(render(summary, header))
    print(f"\nmigrator: commit {(source['commit'] or '?')[:10]}"
          + (f" + {len(source['migrator_uncommitted'])} uncommitted files under migrator/"
             if source["migrator_uncommitted"] else ""))
    doc = {"params": vars(args) | {"out": str(args.out)}, "dataset": manifest, "data_dir": str(data_dir),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                       "loadavg_start": load0, "loadavg_end": load1},
           "source": source,
           "summary": summary, **raw, "bench_seconds": time.perf_counter() - t0}
    report.write_json(args.out, doc)
    log(f"results written to {args.out} (bench took {doc['bench_seconds']:.0f} s)")
    failed = any(not r["run"]["ok"] or not r.get("verify", {"ok": True})["ok"] for r in raw["migrate_runs"])
    return 1 if failed or (not args.no_migrate and not raw["migrate_runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
