"""``python -m bench``: generate a synthetic HridaAI data dir, run the baselines and the ``migrate`` tool, report.

See bench/README.md. Exit code: 0 when every migrate run and verify succeeded (or --no-migrate), 1 otherwise.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench import baselines, generate, harness, ingest, migrate_runner, pgutil, report, vector_data, vectors
from bench.generate import GenParams

HERE = Path(__file__).resolve().parent
log = harness.logger("bench")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options: the dataset's, the baselines', then the harness's common ones."""
    ap = harness.parser("bench", __doc__)
    ap.add_argument("--chats", type=int, default=20_000, help="chat rows (full scale: 50000)")
    ap.add_argument("--narrow", type=int, default=200_000, help="channel `message` rows (full scale: 1000000)")
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--huge-chat", action="store_true", help="add one 30 MB chat")
    ap.add_argument("--runs", type=int, default=3, help="measured migrate runs (and ceiling repetitions); median")
    ap.add_argument("--naive-budget", type=float, default=10.0, help="seconds per table for naive/row-by-row")
    ap.add_argument("--row-by-row-rows", type=int, default=2000)
    ap.add_argument("--vector-collections", type=int, default=0, metavar="N",
                    help="give the data dir a vector_db/: bench.vectors' real-profile Chroma store of N collections "
                         "(built and cached once); then the run's vector lane is reported and the ingest ceiling "
                         "measured. 0 = tables only")
    ap.add_argument("--vector-profile", choices=("real", "uniform"), default="real",
                    help="the store of --vector-collections: real-shaped (sizes from the profile), or uniform: "
                         "--vector-count vectors spread evenly (e.g. 12000 over 2000 collections: issue 18's B, "
                         "thousands of tiny collections)")
    ap.add_argument("--vector-count", type=int, default=12_000, help="vectors of the uniform profile's store")
    ap.add_argument("--ingest-ceiling", action="store_true",
                    help="measure the ingest ceiling (psql \\copy of every migrated table into index-free copies, "
                         "after the first run) also without --vector-collections")
    harness.add_common_options(ap, out=HERE / "results.json", skips="the ceiling, naive and row-by-row baselines",
                               needs="CREATEDB (databases bench_* are created and dropped)")
    return ap.parse_args(argv)


def empty_baselines() -> dict:
    """Placeholder baselines when --no-baselines is given."""
    blank = {"rows_per_s": None, "mb_per_s": None, "scaled": False}
    return {t: {k: dict(blank) for k in ("ceiling", "naive", "row_by_row")} for t in pgutil.BENCH_TABLES}


async def measure_baselines(s: harness.Session, server: dict) -> dict:
    """Ceiling, naive and row-by-row loads of the three tables (placeholders with --no-baselines)."""
    if s.args.no_baselines:
        return empty_baselines()
    base = await baselines.run_all(s.admin_dsn, s.data_dir / "hridaai.db", s.manifest["tables"], runs=s.args.runs,
                                   connections=s.args.connections, naive_budget_s=s.args.naive_budget,
                                   rbr_rows=s.args.row_by_row_rows, log=log)
    base.pop("_server", None)
    return base


def with_vector_store(data_dir: Path, manifest: dict, args: argparse.Namespace) -> tuple[Path, dict]:
    """--vector-collections N: the store of N collections (--vector-profile; bench.vector_data's cache, built there
    when missing) and the tables' data dir, hard-linked into one data dir; its manifest gains ``vector_store``."""
    vectors.scrub_vector_env()
    vp = vector_data.params(args.vector_profile, args.vector_count, args.vector_collections,
                            vector_data.VecParams.dim, args.seed)
    vdir, vm = vector_data.ensure_dataset(vp, log=log)
    description = vector_data.describe_real(vm) if args.vector_profile == "real" else (
        f"{len(vm['collections']):,} collections, {vm['vectors']:,} vectors spread evenly (uniform profile), store "
        f"{vm['store_bytes'] / 1e6:.0f} MB")
    store = {k: v for k, v in vm.items() if k != "collections"} | {
        "collections": len(vm["collections"]), "dir": str(vdir), "description": description}
    return generate.with_vector_store(data_dir, manifest, vdir, store, log=log)


async def run_with_vectors(cmd: list[str], data_dir: Path, work: Path, dsn: str, logs: Path) -> dict:
    """``migrate run`` as without vectors; its dict gains ``vectors`` (bench.vectors' timeline of the vector
    lane), and the per-collection units leave the per-table windows (they are in ``vectors.collections``)."""
    r = await migrate_runner.run_migrate(cmd, data_dir, work, dsn, logs)
    r["vectors"] = vectors.vector_timeline(vectors.read_events(r["stderr"]), r.get("start_epoch"), r["seconds"])
    for key in ("tables", "tables_events"):
        r[key] = {t: w for t, w in r[key].items() if not t.startswith(vectors.VECTOR_PREFIX)}
    return r


async def ingest_ceiling(s: harness.Session, i: int, dsn: str, res: dict) -> dict:
    """After the first run (and its verify): the ingest ceiling on the database it filled (bench/ingest.py)."""
    if i:
        return {}
    try:
        return {"ingest_ceiling": await ingest.ceiling(dsn, s.scratch / "ingest", s.log)}
    except Exception as exc:  # reported in the table; the run's own figures still stand
        s.log(f"ingest ceiling FAILED: {exc}")
        return {"ingest_ceiling": {"error": str(exc)[:500]}}


def main(argv=None) -> int:
    """Entry point of ``python -m bench``."""
    args = parse_args(argv)
    t0 = time.perf_counter()
    source = vectors.source_state()  # what the editable `migrate` runs
    params = GenParams(args.chats, args.narrow, args.users, args.seed, args.huge_chat)
    data_dir, manifest = generate.ensure_dataset(params, log=log)
    extra = {}
    if args.vector_collections:
        data_dir, manifest = with_vector_store(data_dir, manifest, args)
        extra = {"run": run_with_vectors, "run_note": vectors.run_note}
    if args.vector_collections or args.ingest_ceiling:
        extra["after_run"] = ingest_ceiling
    plan = harness.Plan(scratch="bench-work-", databases="bench_migrate_", runs=args.runs,
                        baselines=measure_baselines, **extra)
    raw = harness.measure(args, log, data_dir, manifest, plan)
    summary = report.summarize(manifest["tables"], raw["baselines"], raw["migrate_runs"], os.cpu_count())
    store = manifest.get("vector_store")
    header = (f"hridaai-migrate benchmark: {args.chats:,} chats, {args.narrow:,} narrow rows, seed {args.seed}"
              f"{', +30 MB chat' if args.huge_chat else ''}"
              + (f", {store['collections']:,} Chroma collections" if store else "")
              + f"; PostgreSQL {raw['server']['version']} (toast {'lz4' if raw['server']['lz4'] else 'pglz'}); "
              f"{args.connections} connections; median of {args.runs} runs"
              + (f"\nvector store: {store['description']}" if store else ""))
    print(report.render(summary, header))
    print("\n" + vectors.source_line(source))
    doc = {"dataset": manifest, "data_dir": str(data_dir), "machine": harness.machine(), "source": source,
           "summary": summary}
    return harness.finish(args, log, t0, doc, raw)


if __name__ == "__main__":
    sys.exit(main())
