"""`migrate files --verify`: every upload the ledger says was moved, read back from the store and compared with the
source file's bytes (size and SHA-256; `file.hash` is the SHA-256 of the extracted text, not of the file, so it
proves nothing here), and the target's row holding the URI recorded for it. Rows whose upload was not found are
listed again by id. Differences are named by file id; any makes the command exit 3.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from migrator import ledger
from migrator.catalog import schema as cat
from migrator.context import RunContext
from migrator.files import sources
from migrator.files.run import COLUMN, TABLE, file_digest
from migrator.sources import sqlite as src
from migrator.targets import postgres as pgt


@dataclass
class FilesVerifyReport:
    """Objects read back and compared."""

    store: str
    objects: int = 0
    matched: int = 0
    bytes_read: int = 0
    problems: list[str] = field(default_factory=list)
    unresolved: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every moved upload is in the store, byte for byte, and its row points at it."""
        return not self.problems

    def asdict(self) -> dict:
        """JSON form."""
        return asdict(self) | {"ok": self.ok}

    def asstr(self) -> str:
        """For people."""
        lines = [f"uploads in {self.store}: {self.matched}/{self.objects} objects match their source file "
                 f"({self.bytes_read / 1e6:.1f} MB read back)"]
        lines += [f"  - {p}" for p in self.problems[:50]]
        if self.unresolved:
            lines.append(f"  {len(self.unresolved)} rows keep a local path whose upload was not found: "
                         + ", ".join(u["id"] for u in self.unresolved[:20]))
        lines.append("RESULT: all match" if self.ok else f"RESULT: {len(self.problems)} differences")
        return "\n".join(lines)


async def check(ctx: RunContext, store, *, workers: int = 8) -> FilesVerifyReport:
    """Read every recorded object back; compare with the source files and the target's rows."""
    report = FilesVerifyReport(store.describe())
    uploads_dir = ctx.settings.data_dir / "uploads"
    conn = await pgt.connect(ctx.settings.target_url)
    try:
        records = await ledger.objects(conn, TABLE)
        held = {str(r[0]): r[1] for r in await conn.fetch(
            f"SELECT id, {cat.qi(COLUMN)} FROM {cat.qi(ctx.plan.schema)}.{cat.qi(TABLE)}")}
    finally:
        await pgt.close_quietly(conn)
    lite = src.connect(ctx.snapshot.db_path, immutable=True)
    try:
        inv = sources.inventory(lite, uploads_dir)
    finally:
        lite.close()
    report.unresolved = [{"id": u.file_id, "path": u.path, "problem": u.problem} for u in inv.unresolved]
    recorded = {r["key"] for r in records}
    for u in inv.uploads:  # a resolved upload never moved (the run was stopped, or not run since a catch-up)
        if ledger.dumps([u.file_id]) not in recorded:
            report.problems.append(f"file {u.file_id}: not moved yet (its row keeps {u.path}); run `migrate files`")
    report.objects = len(records)
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="verify-upload") as pool:
        results = await asyncio.gather(*(loop.run_in_executor(pool, _compare, store, uploads_dir, r, held)
                                         for r in records))
    for problem, nbytes in results:
        report.bytes_read += nbytes
        if problem:
            report.problems.append(problem)
        else:
            report.matched += 1
    return report


def _compare(store, uploads_dir, record: dict, held: dict) -> tuple[str | None, int]:
    """One recorded object against its source file and its row: (problem or None, bytes read back)."""
    import json

    file_id = json.loads(record["key"])[0]
    where = f"file {file_id} ({record['uri']})"
    if held.get(file_id) != record["uri"]:
        return f"{where}: the target's row holds {held.get(file_id)!r}, not the object's URI", 0
    name = sources.upload_name(record["original"])
    local = uploads_dir / name if name else None
    key = store.key_of_uri(record["uri"])  # as HridaAI reads it back
    try:
        size, sha = store.digest(key)
    except Exception as exc:  # a missing object, a refused read: named, never a traceback
        return f"{where}: cannot be read back: {exc.__class__.__name__}: {exc}", 0
    if local is None or not local.is_file():
        want = (record["size"], record["sha256"])
        if (size, sha) != want:
            return f"{where}: {size} B sha256 {sha[:12]}, recorded {want[0]} B {want[1][:12]} (source file gone)", size
        return None, size
    src_size, src_sha = file_digest(local)
    if (size, sha) != (src_size, src_sha):
        return (f"{where}: the object is {size} B sha256 {sha[:12]}…, the source file {src_size} B sha256 "
                f"{src_sha[:12]}…"), size
    return None, size
