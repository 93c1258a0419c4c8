"""``python -m bench.vectors``: the vector path (Chroma -> pgvector ``document_chunk``) against what is possible.

Generates (once, cached) a HridaAI data dir whose ``vector_db/`` is a real Chroma store, then on one PostgreSQL:
chromadb read rate, the COPY ceiling, ``migrate run`` + ``migrate verify`` end to end. ``--profile real`` measures a
real-shaped store instead (a collection per uploaded file, a few knowledge bases, users' memories; ``--collections``
is its scale), against a ceiling of raw COPY + the index builds. See bench/README.md ("Vectors"). Exit code: 0 when
every migrate run and verify succeeded (or --no-migrate), 1 otherwise.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import sys
import time
from pathlib import Path

from bench import harness, migrate_runner, pgutil, vector_baselines, vector_data, vector_report
from bench.report import ratio
from bench.vector_data import VecParams

HERE = Path(__file__).resolve().parent
TABLE_DIM = 1536  # PGVECTOR_INITIALIZE_MAX_VECTOR_LENGTH's default: what migrate pads to without configuration
VECTOR_PREFIX = "vector:"
log = harness.logger("bench.vectors")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options: the dataset's, the repetitions and baseline variants, then the harness's common ones."""
    ap = harness.parser("bench.vectors", __doc__)
    ap.add_argument("--profile", choices=vector_data.PROFILES, default="uniform",
                    help="uniform: --vectors split over --collections big collections; real: real-shaped, "
                         "--collections collections (300 and 2000 documented), sizes from the profile")
    ap.add_argument("--vectors", type=int, default=50_000,
                    help="vectors in the store (full scale: 200000); uniform profile only")
    ap.add_argument("--collections", type=int, help="default 20 (uniform), 300 (real)")
    ap.add_argument("--dim", type=int, default=384, help="dimension of the stored vectors")
    ap.add_argument("--runs", type=int, default=3, help="repetitions of the chromadb read and the ceiling; median")
    ap.add_argument("--migrate-runs", type=int, default=1, help="`migrate run`s (each into a fresh database); median")
    ap.add_argument("--no-variants", action="store_true",
                    help="skip the extra ceilings (1 connection; primary key only), one load each")
    harness.add_common_options(ap, out=HERE / "results-vectors.json", skips="the chromadb read and the ceilings",
                               needs="CREATEDB and pgvector (databases bench_v* are created and dropped)")
    return ap.parse_args(argv)


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
    index builds (ANALYZE, then the vector index beside the btree/GIN: up to the ``finalize`` ``vector-index``
    event), the rest of finalize, and after (exit, report).
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
                                     "vectors_per_s": ratio(c["rows"], max(c["end_ts"] - c["start_ts"], 1e-3))}
                                 for n, c in done.items()}}
    if not done:
        return out
    first = min(c["start_ts"] for c in done.values())
    last = max(c["end_ts"] for c in done.values())
    rows = sum(c["rows"] or 0 for c in done.values())
    out.update({"vectors": rows, "load_window_s": last - first, "vectors_per_s": ratio(rows, max(last - first, 1e-3))})
    idx = [e["ts"] for e in events if e.get("stage") == "finalize" and e.get("step") == "vector-index" and "ts" in e]
    fin = [e["ts"] for e in events if e.get("stage") == "finalize" and "ts" in e]
    sec = [e["ts"] for e in events
           if e.get("stage") == "finalize" and e.get("step") == "vector-secondary-indexes" and "ts" in e]
    idx_ts = idx[0] if idx else last
    sec_ts = sec[0] if sec else last
    fin_ts = max(fin) if fin else idx_ts
    # what the ceiling does (COPY into a table whose secondary indexes exist) = load + secondary index builds
    out["load_and_secondary_s"] = sec_ts - first
    out["load_and_secondary_vectors_per_s"] = ratio(rows, max(sec_ts - first, 1e-3))
    # what the real profile's ceiling does (COPY + every index build) = first vector start to the vector index
    out["load_and_indexes_s"] = idx_ts - first
    # the index builds run at once (ANALYZE, then the vector index beside the btree/GIN): one phase, the load's end
    # to the vector index built; the btree/GIN's own end is reported beside it
    out["secondary_indexes_after_load_s"] = sec_ts - last
    if start_epoch:
        out["phases_s"] = {"before_vectors_s": first - start_epoch, "vector_load_s": last - first,
                           "index_builds_s": idx_ts - last, "rest_of_finalize_s": fin_ts - idx_ts,
                           "after_s": start_epoch + seconds - fin_ts}
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


# --- the migrate children (harness.Plan's run and verify) -------------------------------------------------------


def _flags(data_dir: Path, work: Path, dsn: str) -> list[str]:
    """Both children's flags; JSON-lines events on stderr are what vector_timeline reads."""
    return ["--data-dir", str(data_dir), "--work-dir", str(work), "--target", dsn, "--log-format", "json"]


async def run_migrate(cmd: list[str], data_dir: Path, work: Path, dsn: str, logs: Path) -> dict:
    """``migrate run``; its dict gains ``vectors``: the vector load window and phases from its events."""
    epoch = time.time()
    r = await asyncio.to_thread(migrate_runner.run_child, cmd + ["run", *_flags(data_dir, work, dsn)],
                                logs / "migrate-run")
    r["vectors"] = vector_timeline(read_events(r["stderr"]), r.get("start_epoch") or epoch, r["seconds"])
    return r


async def run_verify(cmd: list[str], data_dir: Path, work: Path, dsn: str, logs: Path) -> dict:
    """``migrate verify --json``; its dict gains ``report``: recall@10, self-retrieval, problems."""
    ver = await asyncio.to_thread(migrate_runner.run_child, cmd + ["verify", *_flags(data_dir, work, dsn), "--json"],
                                  logs / "migrate-verify")
    ver["report"] = verify_summary(ver["stdout"])
    return ver


def run_note(r: dict) -> str:
    """The vector load, on the run's progress line."""
    v = r["vectors"]
    return (f"; vector load {v.get('vectors', 0):,} in {v.get('load_window_s') or 0:.1f} s "
            f"({v.get('vectors_per_s') or 0:,.0f}/s)")


def _verify_note(v: dict) -> str:
    """recall@10, on the verify's progress line."""
    return f", recall@10 {v['report'].get('recall_at_10')}"


# --- orchestration ----------------------------------------------------------------------------------------------


async def baselines(s: harness.Session, server: dict) -> dict:
    """chromadb read (--runs), then the COPY ceiling (--runs) and its variants (one load each); {} with
    --no-baselines."""
    if s.args.no_baselines:
        return {}
    if s.args.profile == "real":
        return await baselines_real(s, server)
    args, admin_dsn, lz4 = s.args, s.admin_dsn, server["lz4"]
    store = s.scratch / "chroma-read"
    shutil.copytree(s.data_dir / "vector_db", store)
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


async def baselines_real(s: harness.Session, server: dict) -> dict:
    """The real profile: chromadb read (--runs; nothing kept), then the ceiling: the generator's chunks prepared
    in memory, raw COPY into a primary-key-only document_chunk + the btree/GIN/vector index builds (--runs)."""
    args, admin_dsn, lz4 = s.args, s.admin_dsn, server["lz4"]
    out = {}
    store = s.scratch / "chroma-read"
    shutil.copytree(s.data_dir / "vector_db", store)
    try:
        log(f"chromadb read: get(include=[embeddings, documents, metadatas]) pages of {vector_baselines.PAGE}, "
            f"{args.runs} runs")
        out["chroma_read"], _ = await asyncio.to_thread(vector_baselines.chroma_read, store, args.runs, log,
                                                        keep=False)
    finally:
        vector_data._release_chroma()
        gc.collect()
        shutil.rmtree(store, ignore_errors=True)
    t0 = time.perf_counter()
    batches, n, cols = await asyncio.to_thread(vector_baselines.prepare_generated, dataset_params(args), TABLE_DIM)
    log(f"ceiling rows prepared from the generator in {time.perf_counter() - t0:.1f} s ({n:,} rows of {cols:,} "
        f"collections, vector({TABLE_DIM}), batches of {vector_baselines.PAGE} across collections)")
    dsn = await pgutil.recreate_database(admin_dsn, "bench_vceiling")
    try:
        out["ceiling"] = await vector_baselines.ceiling_real(
            dsn, batches, n, runs=args.runs, connections=args.connections, dimension=TABLE_DIM, lz4=lz4, log=log,
            label=f"ceiling (raw COPY, {args.connections} connections, + indexes)")
    finally:
        await pgutil.drop_database(admin_dsn, "bench_vceiling")
    return out


def dataset_params(args: argparse.Namespace) -> VecParams:
    """The dataset of the options: --profile, --vectors (uniform), --collections, --dim, --seed."""
    return vector_data.params(args.profile, args.vectors, args.collections, args.dim, args.seed)


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


def source_line(source: dict) -> str:
    """``migrator: commit 0123456789 + 2 uncommitted files under migrator/``, below both benches' tables."""
    dirty = source["migrator_uncommitted"]
    return (f"migrator: commit {(source['commit'] or '?')[:10]}"
            + (f" + {len(dirty)} uncommitted files under migrator/" if dirty else ""))


def scrub_vector_env() -> None:
    """Drop ``PGVECTOR_*`` and ``CHROMA_*`` from the environment the children inherit: ``migrate`` must pad to its
    default 1536 and read only --data-dir's store (both entry points, when they have vectors)."""
    for k in [k for k in os.environ if k.startswith(("PGVECTOR_", "CHROMA_"))]:
        os.environ.pop(k)


def main(argv=None) -> int:
    """Entry point of ``python -m bench.vectors``."""
    args = parse_args(argv)
    t0 = time.perf_counter()
    scrub_vector_env()
    load0 = os.getloadavg()
    source = source_state()
    params = dataset_params(args)
    data_dir, manifest = vector_data.ensure_dataset(params, log=log)
    plan = harness.Plan(scratch="bench-vectors-", databases="bench_vmigrate_", runs=args.migrate_runs,
                        baselines=baselines, run=run_migrate, verify=run_verify, run_note=run_note,
                        verify_note=_verify_note)
    raw = harness.measure(args, log, data_dir, manifest, plan)
    summary = vector_report.summarize(manifest, raw["baselines"], raw["migrate_runs"])
    load1 = os.getloadavg()
    split = raw["server"].get("cpu_split")
    header = (f"hridaai-migrate vector benchmark ({args.profile} profile): {manifest['vectors']:,} vectors "
              f"({args.dim}-d, padded to vector({TABLE_DIM})), {len(manifest['collections'])} collections, seed "
              f"{args.seed}; PostgreSQL "
              f"{raw['server']['version']}; chromadb {manifest['chromadb']}; median of {args.runs} (baselines) / "
              f"{args.migrate_runs} (migrate) runs; load average {load0[0]:.1f} -> {load1[0]:.1f} on "
              f"{os.cpu_count()} CPUs"
              + (f"; CPU split: server on {split['server']['cpus']}, tool on {split['tool']['cpus']}" if split else "")
              + (f"\nstore: {vector_data.describe_real(manifest)}" if manifest.get("profile") == "real" else ""))
    print(vector_report.render(summary, header))
    print("\n" + source_line(source))
    doc = {"dataset": manifest, "data_dir": str(data_dir),
           "machine": harness.machine() | {"loadavg_start": load0, "loadavg_end": load1},
           "source": source, "summary": summary}
    return harness.finish(args, log, t0, doc, raw)


if __name__ == "__main__":
    sys.exit(main())
