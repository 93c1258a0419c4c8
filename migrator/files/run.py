"""`migrate files`: each upload put into the object store at the key HridaAI uses, and its `file.path` in the target
rewritten to the URI HridaAI records, one ledger record per file committed with the rewrite.

Order of work, each file once:

1. before anything is written: the storage settings (config.py), every row's upload found (sources.py; missing ones
   refused under `missing_upload=fail`, or listed and left under `report`), the target's finished run at this
   snapshot, the store's bucket (container) and write permission (`check` of stores.open_store's store);
2. uploads in parallel (`--upload-workers`, default 8): a file below 8 MiB read once, hashed and sent in one PUT; a
   bigger one hashed in a streamed pass and streamed in 8 MiB parts (memory: at most 8 MiB per worker, whatever the
   file sizes); an object already there with the same size and SHA-256 is not sent again (a file uploaded before a
   kill);
3. per file, in the target: `UPDATE file SET path = <uri> WHERE id = ... AND path = <the path it had>` and its ledger
   record, in one transaction (with those of the other uploads that completed meanwhile). A killed run, run again, finds the records and the objects: nothing is sent or
   written twice, and the end state is the same.

The source directory is never written; rows already holding a URI are left as they are.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from migrator import ledger
from migrator.catalog import schema as cat
from migrator.context import RunContext
from migrator.errors import PreflightError
from migrator.files import sources
from migrator.sources import sqlite as src
from migrator.targets import postgres as pgt

TABLE, COLUMN = "file", "path"
SMALL_BYTES = 8 << 20  # below: read once, hashed and sent in one PUT from memory
READ_BYTES = 1 << 20
POLICIES = ("fail", "report")


@dataclass
class FilesReport:
    """What `migrate files` did, and what it left."""

    store: str
    moved: int = 0  # objects written and rows rewritten by this run
    already_stored: int = 0  # the object was there already (same size and SHA-256): only the row rewritten
    already_done: int = 0  # rewritten by an earlier run
    remote: int = 0  # rows that already held a URI
    no_path: int = 0
    bytes_sent: int = 0
    aborted_uploads: int = 0  # unfinished multipart uploads of an interrupted run, aborted before sending again
    seconds: float = 0.0
    missing_upload: str = "fail"
    unresolved: list[dict] = field(default_factory=list)  # {id, path, problem}
    note: str = ""

    def asdict(self) -> dict:
        """JSON form."""
        return asdict(self)

    def asstr(self) -> str:
        """For people."""
        lines = [f"uploads -> {self.store}",
                 f"  moved {self.moved} ({self.bytes_sent / 1e6:.1f} MB sent in {self.seconds:.1f} s), "
                 f"{self.already_stored} already stored, {self.already_done} done before; left: {self.remote} "
                 f"already remote, {self.no_path} without a path"]
        if self.unresolved:
            lines.append(f"  {len(self.unresolved)} rows whose upload was not found (missing_upload="
                         f"{self.missing_upload}: their rows keep their path):")
            lines += [f"    - file {u['id']}: {u['problem']} (path {u['path']})" for u in self.unresolved[:50]]
        if self.note:
            lines.append(f"  {self.note}")
        return "\n".join(lines)


async def execute(ctx: RunContext, store, *, missing: str = "fail", workers: int = 8) -> FilesReport:
    """Move every resolved upload of ctx.snapshot to `store`; see the module docstring."""
    if missing not in POLICIES:
        raise PreflightError(f"missing_upload={missing!r} is not one of {', '.join(POLICIES)}")
    t0 = time.monotonic()
    settings, snapshot = ctx.settings, ctx.snapshot
    uploads_dir = settings.data_dir / "uploads"
    lite = src.connect(snapshot.db_path, immutable=True)
    try:
        inv = sources.inventory(lite, uploads_dir)
    finally:
        lite.close()
    report = FilesReport(store.describe(), remote=inv.remote, no_path=inv.no_path, missing_upload=missing,
                         unresolved=[{"id": u.file_id, "path": u.path, "problem": u.problem} for u in inv.unresolved])
    if inv.unresolved and missing == "fail":
        raise PreflightError(f"{len(inv.unresolved)} file rows name an upload that is not in {uploads_dir}",
                             detail="; ".join(f"file {u.file_id}: {u.problem}" for u in inv.unresolved[:10]),
                             hint="restore the files into uploads/, or pass --missing report to move the others and "
                                  "leave these rows as they are (listed in the report); nothing was written")
    conn = await pgt.connect(settings.target_url)
    try:
        await ledger.lock(conn, "the target")
        await _the_run(conn, snapshot.snapshot_id)
        await asyncio.to_thread(store.check)
        done = {o["key"]: o for o in await ledger.objects(conn, TABLE)}
        held = {str(r[0]): r[1] for r in await conn.fetch(
            f"SELECT id, {cat.qi(COLUMN)} FROM {cat.qi(ctx.plan.schema)}.{cat.qi(TABLE)}")}
        pending = []
        for u in inv.uploads:
            key = ledger.dumps([u.file_id])
            record = done.get(key)
            if record is not None and held.get(u.file_id) == record["uri"] and record["original"] == u.path:
                report.already_done += 1
            elif u.file_id not in held:
                report.unresolved.append({"id": u.file_id, "path": u.path,
                                          "problem": "not in the target (quarantined by the load?)"})
            else:
                pending.append(u)
        report.aborted_uploads = await asyncio.to_thread(store.abort_stale_uploads,
                                                         {store.key(u.name) for u in pending})
        present = await asyncio.to_thread(store.listing) if pending else {}
        await _move(conn, ctx, store, pending, present, report, workers)
    finally:
        await pgt.close_quietly(conn)
    report.seconds = time.monotonic() - t0
    return report


async def _the_run(conn, snapshot_id: str) -> None:
    run = await ledger.current_run(conn) if await ledger.exists(conn) else None
    if run is None or run["state"] != "done":
        raise PreflightError("the target has no finished migration to move uploads for",
                             hint="`migrate run` (and `migrate verify`) first, with the same --work-dir")
    if run["snapshot_id"] != snapshot_id:
        raise PreflightError("the target holds another snapshot than this work dir's",
                             detail=f"target: {run['snapshot_id']}, work dir: {snapshot_id}",
                             hint="use the --work-dir of the run (or catch-up) that loaded this target")


async def _move(conn, ctx: RunContext, store, pending: list[sources.Upload], present: dict[str, int],
                report: FilesReport, workers: int) -> None:
    """Uploads in a bounded thread pool; the rewrites of the uploads that completed meanwhile committed together
    (each with its ledger record) as soon as any completes."""
    loop = asyncio.get_running_loop()
    schema = ctx.plan.schema
    sql = (f"UPDATE {cat.qi(schema)}.{cat.qi(TABLE)} SET {cat.qi(COLUMN)} = $1 WHERE id = $2 "
           f"AND {cat.qi(COLUMN)} = $3")
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="upload") as pool:
        queue = iter(pending)
        waiting: set = set()
        try:
            while True:
                for u in itertools.islice(queue, 2 * max(1, workers) - len(waiting)):  # a bounded window in flight
                    waiting.add(loop.run_in_executor(pool, _store_one, store, u, present))
                if not waiting:
                    break
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                stored = [f.result() for f in done]  # an upload's error ends the run here, named
                async with conn.transaction():  # the uploads finished meanwhile: their rewrites in one commit
                    for u, size, sha, sent in stored:
                        uri = store.uri(store.key(u.name))
                        if await conn.execute(sql, uri, u.file_id, u.path) != "UPDATE 1":
                            report.unresolved.append({"id": u.file_id, "path": u.path, "problem":
                                                      "the target's row no longer holds this path (changed since)"})
                            continue
                        await ledger.record_object(conn, TABLE, ledger.dumps([u.file_id]), COLUMN, u.path, uri,
                                                   size, sha)
                        if sent:
                            report.moved += 1
                            report.bytes_sent += size
                        else:
                            report.already_stored += 1
                for u, size, _, sent in stored:
                    ctx.progress.event("files", file=u.file_id, bytes=size, sent=sent)
        finally:
            for f in waiting:
                f.cancel()


def _store_one(store, u: sources.Upload, present: dict[str, int]) -> tuple[sources.Upload, int, str, bool]:
    """In a pool thread: the file's size and SHA-256, and its object written unless already there (listed with this
    size, and its recorded checksum the same: one HEAD, only for listed keys)."""
    key = store.key(u.name)
    data = None
    if u.local.stat().st_size < SMALL_BYTES:  # small: read once, hashed and sent from memory
        data = u.local.read_bytes()
        size, sha = len(data), hashlib.sha256(data).hexdigest()
    else:  # big: hashed in a streamed pass, then streamed in parts
        size, sha = file_digest(u.local)
    if present.get(key) == size and store.stat(key) == (size, sha):
        return u, size, sha, False
    if data is not None and len(data) == size:
        store.put_bytes(data, key, sha)
    else:
        store.put(u.local, key, sha)
    return u, size, sha, True


def file_digest(path: Path) -> tuple[int, str]:
    """(size, SHA-256) of a file, streamed."""
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(READ_BYTES):
            h.update(chunk)
            n += len(chunk)
    return n, h.hexdigest()
