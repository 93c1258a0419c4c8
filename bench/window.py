"""``python -m bench.window``: the low-downtime cutover's window (issue 15), in one run on the bench's data.

1. ``migrate run`` of the bench's data dir (tables of ``python -m bench``'s default scale, plus the real-profile Chroma
   store of ``--vector-collections`` collections) while "HridaAI runs": the bulk pass, then its ``verify``;
2. a change set the way HridaAI makes one, in a copy of the data dir (the cache is never written): ``--change`` of
   the chats edited (title, updated_at, a message appended to the chat JSON), as many new chats with their
   messages, a few deleted with their messages, channel messages added; one file's collection deleted, new file
   collections and a new memory written through chromadb (after a CHECKPOINT and a sync: the bulk pass is long
   done when the window comes, its writes are not still queued ahead of the catch-up's);
3. ``migrate catch-up --then-verify`` (HridaAI stopped): its phases (snapshot, plan, delta, the writes, promote)
   until READY, when the target's state is pinned and HridaAI may start; then the full verify of that pinned state.

The **window** is what HridaAI waits for once it is stopped: the catch-up until READY (verify then reads the pinned
state while HridaAI runs). Every ratio is to the bulk run of the same invocation.
Results: ``--out`` (default ``bench/results-window.json``).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bench import generate, harness, migrate_runner, pgutil, report
from bench.__main__ import with_vector_store
from bench.generate import GenParams

HERE = Path(__file__).resolve().parent
log = harness.logger("bench.window")
CHROMA_CHANGE = """
import sys, numpy as np, chromadb
from chromadb.config import Settings
store, new_files, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = chromadb.PersistentClient(path=store, settings=Settings(anonymized_telemetry=False))
names = sorted(x.name for x in c.list_collections())
files = [n for n in names if n.startswith("file-")]
c.delete_collection(files[0])                                      # a file deleted: HridaAI drops its collection
rng = np.random.default_rng(seed)
dim = c.get_collection(files[1]).get(limit=1, include=["embeddings"])["embeddings"].shape[1]
for j in range(new_files):                                         # files uploaded meanwhile
    n = int(rng.integers(20, 200))
    c.create_collection(f"file-window-{j}", metadata={"hnsw:space": "cosine"}, embedding_function=None).add(
        ids=[f"w{j}-{i}" for i in range(n)], embeddings=rng.standard_normal((n, dim)).astype(np.float32),
        documents=[f"chunk {i} of window file {j}" for i in range(n)],
        metadatas=[{"file_id": f"window-{j}", "start_index": i} for i in range(n)])
mem = next((n for n in names if n.startswith("user-memory-")), None)
if mem:                                                            # a memory saved meanwhile
    c.get_collection(mem).add(ids=["window-memory"], embeddings=rng.standard_normal((1, dim)).astype(np.float32),
                              documents=["remembered during the window"])
print(len(files))
"""


def parse_args(argv=None):
    """The dataset's options (as ``python -m bench``), the change set's, then the harness's common ones."""
    ap = harness.parser("bench.window", __doc__)
    ap.add_argument("--chats", type=int, default=20_000)
    ap.add_argument("--narrow", type=int, default=200_000)
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--vector-collections", type=int, default=300, metavar="N",
                    help="the real-profile Chroma store of N collections (0 = tables only)")
    ap.add_argument("--change", type=float, default=0.01, help="share of chats edited, and of chats added")
    ap.add_argument("--deleted-chats", type=int, default=5)
    ap.add_argument("--new-files", type=int, default=3, help="file collections written between run and catch-up")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--target", help="admin postgresql:// URI of a server to use instead of an embedded one; needs "
                                     "CREATEDB (database bench_window is created and dropped)")
    ap.add_argument("--out", type=Path, default=HERE / "results-window.json")
    ap.add_argument("--keep", action="store_true", help="keep the work dir, data copy and logs (path printed)")
    return ap.parse_args(argv)


def change_tables(db_path: Path, share: float, deleted: int, seed: int) -> dict:
    """Edit, add and delete chats (with their chat_message rows) and add channel messages, as HridaAI's own writes
    would: the same tables, through SQLite, in place."""
    db = sqlite3.connect(db_path)
    ids = [r[0] for r in db.execute("SELECT id FROM chat ORDER BY id")]
    n = max(1, int(len(ids) * share))
    cols = [r[1] for r in db.execute("PRAGMA table_info(chat)") if r[1] != "id"]
    names = ", ".join(f'"{c}"' for c in cols)
    copied = ", ".join("NULL" if c == "share_id" else f'"{c}"' for c in cols)
    mcols = [r[1] for r in db.execute("PRAGMA table_info(chat_message)") if r[1] not in ("id", "chat_id")]
    mnames = ", ".join(f'"{c}"' for c in mcols)
    step = max(1, len(ids) // n)
    edited = ids[::step][:n]
    for i in edited:
        db.execute("UPDATE chat SET title = title || ' (edited)', updated_at = updated_at + 1, "
                   "chat = json_set(chat, '$.edited_in_window', 1) WHERE id = ?", (i,))
    gone = [i for i in ids[1::step] if i not in set(edited)][:deleted]
    msgs_deleted = 0
    for i in gone:
        msgs_deleted += db.execute("DELETE FROM chat_message WHERE chat_id = ?", (i,)).rowcount
        db.execute("DELETE FROM chat WHERE id = ?", (i,))
    msgs_added = 0
    for k in range(n):
        like = ids[-1 - k]
        db.execute(f"INSERT INTO chat (id, {names}) SELECT 'window-{seed}-{k}', {copied} FROM chat WHERE id = ?",
                   (like,))
        msgs_added += db.execute(f"INSERT INTO chat_message (id, chat_id, {mnames}) SELECT 'window-{seed}-{k}-' "
                                 f"|| id, 'window-{seed}-{k}', {mnames} FROM chat_message WHERE chat_id = ?",
                                 (like,)).rowcount
    channel = 0
    if db.execute("SELECT count(*) FROM message").fetchone()[0]:
        mc = [r[1] for r in db.execute("PRAGMA table_info(message)") if r[1] != "id"]
        total = db.execute("SELECT count(*) FROM message").fetchone()[0]
        channel = db.execute(f"INSERT INTO message (id, {', '.join(mc)}) SELECT 'window-' || id, "
                             f"{', '.join(mc)} FROM message ORDER BY id LIMIT ?", (max(1, int(total * share)),)
                             ).rowcount
    db.commit()
    db.close()
    return {"chats_edited": len(edited), "chats_deleted": len(gone), "their_messages_deleted": msgs_deleted,
            "chats_added": n, "their_messages_added": msgs_added, "channel_messages_added": channel}


def change_store(store: Path, new_files: int, seed: int) -> dict:
    """One file collection deleted, `new_files` written, a memory added: through chromadb, in a child process."""
    proc = subprocess.run([sys.executable, "-c", CHROMA_CHANGE, str(store), str(new_files), str(seed)],
                          capture_output=True, text=True, check=True)
    return {"file_collections_before": int(proc.stdout.split()[-1]), "file_collections_deleted": 1,
            "file_collections_added": new_files, "memories_added": 1}


def phases(stderr: str) -> dict:
    """The catch-up's own phase events (snapshot, plan, delta, promote) and its steps' span."""
    out: dict[str, float] = {}
    steps = []
    for line in Path(stderr).read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        e = json.loads(line)
        if e.get("stage") == "catch-up" and e.get("phase") == "ready":
            out["ready_ts"] = e["ts"]
        elif e.get("stage") == "catch-up" and "phase" in e:
            out[e["phase"] + "_s"] = e["seconds"]
        elif e.get("stage") == "catch-up" and "step" in e:
            steps.append(e["ts"])
    return out | ({"steps": len(steps)} if steps else {})


async def measure(args, data_dir: Path, scratch: Path, admin: str) -> dict:
    """The four steps on one fresh database."""
    cmd = migrate_runner.default_command()
    dsn = pgutil.with_database(admin, "bench_window")
    await pgutil.recreate_database(admin, "bench_window")
    work, logs = scratch / "work", scratch / "logs"
    logs.mkdir()
    out: dict = {}
    run = await migrate_runner.run_migrate(cmd, data_dir, work, dsn, logs)
    out["run"] = {k: run[k] for k in ("exit_code", "seconds", "peak_rss_mb", "phases")}
    log(f"migrate run: exit {run['exit_code']}, {run['seconds']:.1f} s")
    if not run["ok"]:
        raise SystemExit(migrate_runner.stderr_tail(run))
    ver = await migrate_runner.run_verify(cmd, data_dir, work, dsn, logs)
    out["verify_after_run"] = {k: ver[k] for k in ("exit_code", "seconds")}
    await _settle(dsn)
    out["changes"] = change_tables(data_dir / "hridaai.db", args.change, args.deleted_chats, args.seed)
    if (data_dir / "vector_db").exists():
        out["changes"] |= change_store(data_dir / "vector_db", args.new_files, args.seed)
    log(f"changed: {out['changes']}")
    argv = cmd + ["catch-up", "--then-verify", "--json", "--log-format", "json", "--data-dir", str(data_dir),
                  "--work-dir", str(work), "--target", dsn]
    cu = await asyncio.to_thread(migrate_runner.run_child, argv, logs / "migrate-catch-up")
    if not cu["ok"]:
        raise SystemExit(migrate_runner.stderr_tail(cu))
    both = json.loads(Path(cu["stdout"]).read_text())
    report, ph = both["catch_up"], phases(cu["stderr"])
    ready = ph.pop("ready_ts") - cu["start_epoch"]
    out["catch_up"] = {"exit_code": cu["exit_code"], "seconds": ready, "with_verify_seconds": cu["seconds"],
                       "peak_rss_mb": cu["peak_rss_mb"], "phases": ph,
                       "tables": {t: c for t, c in report["tables"].items() if any(c.values())},
                       "vectors": report["vectors"]}
    log(f"migrate catch-up --then-verify: READY after {ready:.1f} s, verified after {cu['seconds']:.1f} s")
    out["verify_after_catch_up"] = {"exit_code": cu["exit_code"], "seconds": ph.get("verify_s", 0.0),
                                    "pinned": True}
    await pgutil.drop_database(admin, "bench_window")
    return out


async def _settle(dsn: str) -> None:
    """The bulk pass finished long before the window in real life: its writes are on disk by then (a checkpoint and
    the page cache written back), not still queued ahead of the catch-up's own snapshot copy."""
    import asyncpg
    con = await asyncpg.connect(dsn)
    try:
        await con.execute("CHECKPOINT")
    except asyncpg.PostgresError:  # not a superuser on --target: the server checkpoints on its own schedule
        pass
    finally:
        await con.close()
    await asyncio.to_thread(os.sync)


def render(r: dict, header: str) -> str:
    """The figures side by side: the bulk run is the baseline of every ratio."""
    bulk = r["run"]["seconds"]
    cu, ver = r["catch_up"], r["verify_after_catch_up"]
    window = cu["seconds"]
    ph = ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in cu["phases"].items() if k.endswith("_s") and k != "verify_s")
    written = {t: c for t, c in cu["tables"].items()}
    vec = cu["vectors"]
    lines = [header,
             f"  migrate run (bulk, HridaAI running)   {bulk:7.1f} s   1.00x   verify after it {r['verify_after_run']['seconds']:.1f} s"
             f" (exit {r['verify_after_run']['exit_code']})",
             f"  change set                            {r['changes']}",
             f"  catch-up --then-verify until READY    {cu['seconds']:7.1f} s   {cu['seconds'] / bulk:.2f}x   {ph}",
             f"    tables written: {written}",
             f"    vectors: {_n(vec.get('added'))} collections added, {_n(vec.get('removed'))} removed, "
             f"{vec.get('untouched', 0)} not read; {vec.get('upserted', 0)} chunks written, {vec.get('deleted', 0)} removed",
             f"  then verify of the pinned state       {ver['seconds']:7.1f} s   {ver['seconds'] / bulk:.2f}x   exit "
             f"{ver['exit_code']} (HridaAI already running)",
             f"  window = until READY                  {window:7.1f} s   {window / bulk:.2f}x the bulk run"]
    return "\n".join(lines)


def _n(v) -> int:
    return len(v) if isinstance(v, list) else int(v or 0)


def main(argv=None) -> int:
    """Entry point."""
    args = parse_args(argv)
    t0 = time.perf_counter()
    data_dir, manifest = generate.ensure_dataset(GenParams(args.chats, args.narrow, args.users, args.seed), log=log)
    if args.vector_collections:
        data_dir, manifest = with_vector_store(data_dir, manifest, args)
    with harness.scratch_dir("bench-window-", args.keep, log) as scratch, harness.postgres(args.target, log) as admin:
        copy = scratch / "data"
        shutil.copytree(data_dir, copy)  # the change set is written here, never into the cache
        raw = asyncio.run(measure(args, copy, scratch, admin))
    store = manifest.get("vector_store")
    header = (f"window bench: {args.chats:,} chats, {args.narrow:,} narrow rows"
              + (f", {store['collections']:,} Chroma collections" if store else "")
              + f"; {args.change:.0%} of chats edited and as many added")
    print(render(raw, header))
    doc = {"params": vars(args) | {"out": str(args.out)}, "dataset": manifest, "machine": harness.machine(), **raw,
           "bench_seconds": time.perf_counter() - t0}
    report.write_json(args.out, doc)
    log(f"results written to {args.out}")
    return 0 if raw["verify_after_catch_up"]["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
