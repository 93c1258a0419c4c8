"""``python -m bench``: generate a synthetic HridaAI data dir, run the baselines and the ``migrate`` tool, report.

See bench/README.md. Exit code: 0 when every migrate run and verify succeeded (or --no-migrate), 1 otherwise.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench import baselines, generate, harness, pgutil, report
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


def main(argv=None) -> int:
    """Entry point of ``python -m bench``."""
    args = parse_args(argv)
    t0 = time.perf_counter()
    params = GenParams(args.chats, args.narrow, args.users, args.seed, args.huge_chat)
    data_dir, manifest = generate.ensure_dataset(params, log=log)
    plan = harness.Plan(scratch="bench-work-", databases="bench_migrate_", runs=args.runs,
                        baselines=measure_baselines)
    raw = harness.measure(args, log, data_dir, manifest, plan)
    summary = report.summarize(manifest["tables"], raw["baselines"], raw["migrate_runs"], os.cpu_count())
    header = (f"hridaai-migrate benchmark: {args.chats:,} chats, {args.narrow:,} narrow rows, seed {args.seed}"
              f"{', +30 MB chat' if args.huge_chat else ''}; PostgreSQL {raw['server']['version']} "
              f"(toast {'lz4' if raw['server']['lz4'] else 'pglz'}); {args.connections} connections; "
              f"median of {args.runs} runs")
    print(report.render(summary, header))
    doc = {"dataset": manifest, "data_dir": str(data_dir), "machine": harness.machine(), "summary": summary}
    return harness.finish(args, log, t0, doc, raw)


if __name__ == "__main__":
    sys.exit(main())
