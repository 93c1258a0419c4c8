"""``python -m bench.files``: `migrate files` against a plain parallel upload of the same files (issue 19).

One moto S3 server (bench/s3server.py) and one embedded PostgreSQL for the whole run. A data dir is made from the
real fixture's schema with ``--files`` `file` rows and their uploads (sizes: most 20 KB-1 MB, one in twenty 2-12 MB,
multipart above 8 MiB), loaded with `migrate run`; then, each into its own fresh bucket:

* **baseline**: boto3's ``upload_file`` of every file in a ``ThreadPoolExecutor`` of ``--workers`` threads, the same
  client library and defaults, nothing else (no checksum, no row rewrite, no ledger);
* **migrate files**: the real tool as a child process with ``--upload-workers`` the same: SHA-256 of each file,
  the upload, the row rewrite and its ledger record per file. Wall time, throughput, peak RSS.

Then the tool's peak RSS again on a set 4x bigger with one ``--big-mb`` file added, to show that memory follows
neither file count nor file size. Results: ``--out`` (default bench/results-files.json).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import harness, migrate_runner, pgutil, report, s3server

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCHEMA_SOURCE = ROOT / "fixtures" / "hridaai-0.12.4-small" / "hridaai.db"
log = harness.logger("bench.files")


def parse_args(argv=None) -> argparse.Namespace:
    """Options."""
    ap = argparse.ArgumentParser(prog="python -m bench.files", description=__doc__,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--workers", type=int, default=8, help="upload threads, both sides")
    ap.add_argument("--big-mb", type=int, default=256, help="the one big file of the memory check")
    ap.add_argument("--runs", type=int, default=3, help="baseline and tool alternately, each in a fresh bucket; median")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=HERE / "results-files.json")
    ap.add_argument("--keep", action="store_true")
    return ap.parse_args(argv)


def sizes(n: int, rng: random.Random) -> list[int]:
    """Upload sizes: chat attachments and documents, a few big PDFs."""
    return [rng.randint(2 << 20, 12 << 20) if rng.random() < 0.05 else rng.randint(20_000, 1_000_000)
            for _ in range(n)]


def make_data_dir(out: Path, file_sizes: list[int], seed: int) -> Path:
    """A HridaAI data dir (the fixture's schema and rows, its `file` rows replaced) with these uploads."""
    data = out / "data"
    (data / "uploads").mkdir(parents=True)
    shutil.copy(SCHEMA_SOURCE, data / "hridaai.db")
    db = sqlite3.connect(data / "hridaai.db")
    template = db.execute("SELECT * FROM file LIMIT 1").fetchone()
    cols = [r[1] for r in db.execute("PRAGMA table_info(file)")]
    db.execute("DELETE FROM file")
    rng = random.Random(seed)
    block = rng.randbytes(1 << 20)
    rows = []
    for i, size in enumerate(file_sizes):
        file_id = str(uuid.UUID(int=rng.getrandbits(128)))
        name = f"{file_id}_document-{i}.{'pdf' if size > 2 << 20 else 'md'}"
        with open(data / "uploads" / name, "wb") as f:
            left = size
            while left:  # distinct bytes per file (a rotating window of one random block)
                off = (i * 7919 + left) % len(block)
                chunk = (block[off:] + block[:off])[:min(left, len(block))]
                f.write(chunk)
                left -= len(chunk)
        row = dict(zip(cols, template), id=file_id, filename=name.split("_", 1)[1],
                   path=f"/app/backend/data/uploads/{name}")
        rows.append([row[c] for c in cols])
    db.executemany(f"INSERT INTO file ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)
    db.commit()
    db.close()
    return data


def baseline(url: str, bucket: str, files: list[Path], workers: int) -> tuple[float, float]:
    """boto3 upload_file of every file from a thread pool: (wall seconds, CPU seconds of this process)."""
    c = s3server.client(url)
    c.create_bucket(Bucket=bucket)
    t0, c0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda p: c.upload_file(str(p), bucket, f"uploads/{p.name}"), files))
    return time.perf_counter() - t0, time.process_time() - c0


def tool(cmd: list[str], data: Path, work: Path, dsn: str, url: str, bucket: str, workers: int, logs: Path) -> dict:
    """`migrate files` as a child: exit code, seconds, peak RSS."""
    s3server.client(url).create_bucket(Bucket=bucket)
    os.environ.update({"STORAGE_PROVIDER": "s3", "S3_BUCKET_NAME": bucket, "S3_ENDPOINT_URL": url,
                       "S3_REGION_NAME": s3server.REGION, "S3_KEY_PREFIX": "uploads", "S3_ACCESS_KEY_ID": "testing",
                       "S3_SECRET_ACCESS_KEY": "testing", "S3_ADDRESSING_STYLE": "path"})
    argv = cmd + ["files", "--upload-workers", str(workers), "--data-dir", str(data), "--work-dir", str(work),
                  "--target", dsn, "--log-format", "none"]
    return migrate_runner.run_child(argv, logs / f"files-{bucket}")


def one_set(s: dict, name: str, file_sizes: list[int], admin: str, url: str, workers: int, runs: int) -> dict:
    """Data dir, `migrate run`, then `runs` times baseline and tool (0 runs: the tool once, no baseline) on the same
    files; the medians."""
    base = s["scratch"] / name
    data = make_data_dir(base, file_sizes, s["seed"])
    files = sorted((data / "uploads").iterdir())
    total = sum(p.stat().st_size for p in files)
    cmd = migrate_runner.default_command()
    dsn = asyncio.run(pgutil.recreate_database(admin, f"bench_files_{name}"))
    logs = base / "logs"
    logs.mkdir()
    run = migrate_runner.run_child(cmd + ["run", "--data-dir", str(data), "--work-dir", str(base / "w"), "--target",
                                          dsn, "--log-format", "none"], logs / "run")
    if not run["ok"]:
        raise SystemExit(migrate_runner.stderr_tail(run))
    out = {"files": len(files), "bytes": total, "largest": max(file_sizes), "runs": []}
    for i in range(max(runs, 1)):
        one = {}
        if runs:
            secs, cpu_s = baseline(url, f"base-{name}-{i}", files, workers)
            one["baseline"] = {"seconds": secs, "mb_per_s": total / 1e6 / secs, "files_per_s": len(files) / secs,
                               "client_cpu_s": cpu_s}
            log(f"{name} #{i + 1}: baseline {secs:.1f} s")
        if i:  # a fresh target for the next run: the rows back to their local paths, the ledger without objects
            asyncio.run(_reset(dsn, data))
        r = tool(cmd, data, base / "w", dsn, url, f"tool-{name}-{i}", workers, logs)
        if not r["ok"]:
            raise SystemExit(migrate_runner.stderr_tail(r))
        one["tool"] = {"seconds": r["seconds"], "mb_per_s": total / 1e6 / r["seconds"],
                       "files_per_s": len(files) / r["seconds"], "peak_rss_mb": r["peak_rss_mb"],
                       "client_cpu_s": r["tool_core_s"], "machine_busy_core_s": r["busy_core_s"]}
        log(f"{name} #{i + 1}: migrate files {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB")
        out["runs"].append(one)
    for side in ("baseline", "tool"):
        done = sorted((r[side] for r in out["runs"] if side in r), key=lambda x: x["seconds"])
        if done:
            out[side] = done[len(done) // 2]
    return out


async def _reset(dsn: str, data: Path) -> None:
    import asyncpg
    con = await asyncpg.connect(dsn)
    try:
        await con.execute("UPDATE file f SET path = o.original FROM hridaai_migrate.object o "
                          "WHERE o.table_name = 'file' AND o.key = json_build_array(f.id)::text")
        await con.execute("DELETE FROM hridaai_migrate.object")
    finally:
        await con.close()


def render(res: dict, workers: int) -> str:
    """Side by side: the baseline of the same run first."""
    a, b = res["sets"]["main"], res["sets"]["memory"]
    ratio = a["tool"]["mb_per_s"] / a["baseline"]["mb_per_s"]
    return "\n".join([
        f"files bench: moto S3 server (in memory, loopback), {workers} upload threads both sides, median of "
        f"{len(a['runs'])} runs each (alternating)",
        f"  set: {a['files']} files, {a['bytes'] / 1e6:.0f} MB, largest {a['largest'] / 1e6:.1f} MB",
        f"  boto3 upload_file x {workers} threads   {a['baseline']['seconds']:6.1f} s  "
        f"{a['baseline']['mb_per_s']:6.1f} MB/s  {a['baseline']['files_per_s']:6.1f} files/s  "
        f"client CPU {a['baseline']['client_cpu_s']:.1f} s",
        f"  migrate files (+ sha256, rewrite, ledger) {a['tool']['seconds']:6.1f} s  {a['tool']['mb_per_s']:6.1f} MB/s  "
        f"{a['tool']['files_per_s']:6.1f} files/s  client CPU {a['tool']['client_cpu_s']:.1f} s   "
        f"{ratio:.2f}x the baseline's throughput",
        f"  peak RSS of migrate files: {a['tool']['peak_rss_mb']:.0f} MB on {a['files']} files (largest "
        f"{a['largest'] / 1e6:.0f} MB); {b['tool']['peak_rss_mb']:.0f} MB on {b['files']} files (largest "
        f"{b['largest'] / 1e6:.0f} MB)"])


def main(argv=None) -> int:
    """Entry point."""
    args = parse_args(argv)
    t0 = time.perf_counter()
    rng = random.Random(args.seed)
    main_sizes = sizes(args.files, rng)
    memory_sizes = sizes(args.files * 4, rng) + [args.big_mb << 20]
    scratch = Path(tempfile.mkdtemp(prefix="bench-files-"))
    try:
        with s3server.server() as url, pgutil.embedded_server(log=log) as admin:
            s = {"scratch": scratch, "seed": args.seed}
            sets = {"main": one_set(s, "main", main_sizes, admin, url, args.workers, args.runs),
                    "memory": one_set(s, "memory", memory_sizes, admin, url, args.workers, 0)}
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    res = {"params": vars(args) | {"out": str(args.out)}, "machine": harness.machine(), "sets": sets,
           "bench_seconds": time.perf_counter() - t0}
    print(render(res, args.workers))
    report.write_json(args.out, res)
    log(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
