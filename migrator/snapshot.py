"""Stage 1 — snapshot: a consistent, immutable copy of the source, with a manifest.

hridaai.db (and vector_db/chroma.sqlite3) are copied with SQLite's online backup API, which is correct while
HridaAI is running in WAL mode; in a rollback-journal mode a writer's lock is waited for, bounded, never read through
(sources/live.py). Segment folders are copied as files, of the same moment as chroma.sqlite3 (see
_copy_vector_store). The source is only ever opened read-only. Everything later reads the snapshot, never the live
files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields
from pathlib import Path

from migrator import __version__, access
from migrator.errors import PreflightError, TransientError, UsageError, work_dir_error
from migrator.settings import Settings
from migrator.sources import live, sqlite as src
from migrator.workdir import ensure_private_dir, private_tree, write_json

FORMAT_VERSION = 1
SNAPSHOT_DIR = "snapshot"
MANIFEST = "manifest.json"
DB_NAME = "hridaai.db"
VECTOR_DIR = "vector_db"
SEGMENT_ATTEMPTS = 3
SQLITE_FILES = (DB_NAME, f"{VECTOR_DIR}/chroma.sqlite3")  # a catch-up's snapshot names these by their differing pages


@dataclass
class Snapshot:
    """What `migrate snapshot` made: where it is and what it holds."""

    snapshot_id: str
    directory: str
    source_revision: str | None
    row_counts: dict[str, int]
    files: list[dict] = field(default_factory=list)
    created_at: str = ""
    source: dict = field(default_factory=dict)
    vector_store: dict | None = None
    format_version: int = FORMAT_VERSION
    tool_version: str = __version__
    deferred: list[str] = field(default_factory=list)  # SQLite files whose quick_check and SHA-256 are still due
    linked: dict[str, dict] = field(default_factory=dict)  # SQLite files read in place until `materialize` copies them

    # not in the manifest: the page diffs `take(previous=)` found, by file (a resumed catch-up finds none)
    page_diffs = None

    @property
    def db_path(self) -> Path:
        """The snapshot's copy of hridaai.db."""
        return Path(self.directory) / DB_NAME

    @property
    def vector_path(self) -> Path | None:
        """The snapshot's copy of vector_db/, if the source had one."""
        return Path(self.directory) / VECTOR_DIR if self.vector_store else None

    def asdict(self) -> dict:
        """JSON form (the manifest): its fields as they are (dataclasses.asdict's deep copy of thousands of file
        entries cost 0.16 s a call at 2,000 collections)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def asstr(self) -> str:
        """For people."""
        total = sum(f["bytes"] for f in self.files)
        lines = [f"snapshot {self.snapshot_id}  ({len(self.files)} files, {total:,} bytes)",
                 f"  directory        {self.directory}",
                 f"  source revision  {self.source_revision or 'none'}",
                 f"  tables           {len(self.row_counts)}, {sum(self.row_counts.values()):,} rows"]
        if self.vector_store:
            lines.append(f"  vector store     {self.vector_store.get('collections', '?')} collections")
        return "\n".join(lines)


def take(settings: Settings, *, name: str = SNAPSHOT_DIR, previous: Snapshot | None = None,
         defer_checks: bool = False, sync: bool = True, link: bool = False) -> Snapshot:
    """Copy the source into WORK_DIR/<name> (default `snapshot`; `catch-up` takes `snapshot-next` beside the one the
    target holds) atomically (temp dir + rename) and write its manifest.

    previous (catch-up): the snapshot the target holds. Each SQLite file of the new one is then identified by the
    pages that differ from the previous one's (a `derived` entry: their numbers and bytes hashed, with the previous
    snapshot's id), not by hashing the whole file. defer_checks: those files' quick_check and whole SHA-256 are left
    to `complete_checks` (catch-up --then-verify runs them after READY, before its verify). sync=False: the SQLite
    copies are not fsynced here; the caller runs `sync` before anything relies on them surviving a crash (catch-up:
    while it finds the delta, before the target records the snapshot). link (with previous): a SQLite file that
    nothing writes (live.quiescent: no lock, no journal, no WAL content) is not copied now but linked and read in
    place; `materialize` must then copy it in (proving it unchanged): `complete_checks` does, after READY.

    One snapshot at a time per work dir (a file lock); a killed snapshot leaves only a temp dir, removed next time.

    Raises UsageError (exit 2): no data dir, no hridaai.db; PreflightError (exit 4): a source this process may not
    read (access.check_source), not SQLite, damaged, a wrong SQLCipher key; WorkDirError (exit 1): the copy cannot
    be written (partial files removed).
    """
    source = settings.source_db
    access.check_source(source, settings.vector_store)
    _check_source(source)
    work = ensure_private_dir(settings.work_dir)
    with _work_lock(work):
        for stale in work.glob(f".{SNAPSHOT_DIR}.*tmp*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{SNAPSHOT_DIR}.", suffix=".tmp", dir=work))
        old_umask = os.umask(0o077)
        try:
            snap = _copy_into(tmp, source, settings, previous=previous, defer_checks=defer_checks, sync=sync,
                              link=link and previous is not None and settings.sqlcipher_key is None)
            final = work / name
            snap.directory = str(final)  # the manifest names where it will be: written once, before the rename
            write_json(tmp / MANIFEST, snap.asdict(), what="the snapshot")
            if final.exists():
                os.replace(final, tmp.with_suffix(".old.tmp"))  # a manifest never survives without its files
                shutil.rmtree(tmp.with_suffix(".old.tmp"))
            os.replace(tmp, final)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise work_dir_error(exc, what="the snapshot") from exc
            raise
        finally:
            os.umask(old_umask)
    return snap


def _copy_into(tmp: Path, source: Path, settings: Settings, *, previous: Snapshot | None = None,
               defer_checks: bool = False, sync: bool = True, link: bool = False) -> Snapshot:
    """The database and the vector store are copied at the same time (both wait on I/O and SQLite, not Python);
    then the copy's quick_check, its fsync, hashing and row counts run together (each reads or writes the copy
    on its own; measured 6.4 -> 4.7 s for a 935 MB database)."""
    db = tmp / DB_NAME
    check = not (defer_checks and previous is not None)
    with ThreadPoolExecutor(max_workers=3) as pool:
        linked: dict[str, dict] = {}
        jobs = [pool.submit(_copy_vector_store, settings.vector_store, tmp / VECTOR_DIR,
                            linked=linked if link else None)]
        try:
            if not (link and _linked(source, db, linked)):
                live.backup(source, db, key=settings.sqlcipher_key)
                jobs += [pool.submit(_fsync, db)] if sync else []
            if check and not db.is_symlink():  # a linked source is never opened here but read-only
                jobs += [pool.submit(_check_copy, source, db, key=settings.sqlcipher_key)]
            vector = jobs[0].result()
            store_db = tmp / VECTOR_DIR / "chroma.sqlite3"
            if vector is not None and not store_db.is_symlink():  # beside the hashing, not before it
                jobs += [pool.submit(_fsync, store_db)] if sync else []
                jobs += [pool.submit(_check_store_copy, settings.vector_store / store_db.name, store_db)
                         ] if check else []
            snap = _describe(tmp, source, vector, previous=previous)
            if not check:
                snap.deferred = sorted(f["path"] for f in snap.files if "derived" in f)
            snap.linked = {str(Path(k).relative_to(tmp)): v for k, v in linked.items()}
        except Exception:
            wait(jobs)
            failed = next((e for e in (j.exception() for j in jobs) if e is not None), None)
            if failed is not None:  # a copy's own verdict (damaged, unreadable) says more than what reading it met
                raise failed from None
            raise
        finally:
            wait(jobs)  # never leave a job running on a directory the caller may remove
        for job in jobs:
            job.result()  # the integrity check's verdict, a failed fsync
    return snap


@contextlib.contextmanager
def _work_lock(work: Path):
    """An exclusive lock on the work dir while a snapshot is written (two commands started at once wait here)."""
    fd = os.open(work / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def find(settings: Settings, *, name: str = SNAPSHOT_DIR) -> Snapshot | None:
    """The snapshot already in the work dir (WORK_DIR/<name>), or None."""
    path = settings.work_dir / name / MANIFEST
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    if doc.get("format_version") != FORMAT_VERSION:
        raise UsageError("the snapshot in the work dir has another format_version",
                         detail=str(path), hint="take a new one with `migrate snapshot`")
    doc["directory"] = str(path.parent)
    return Snapshot(**doc)


PROMOTED = f".{SNAPSHOT_DIR}.promoted.tmp"  # matched by take()'s clean-up of stale temp dirs too


def promote(settings: Settings, name: str, *, set_aside: bool = False) -> Snapshot:
    """WORK_DIR/<name> becomes WORK_DIR/snapshot (the one before is removed, or with set_aside kept for `sweep`, e.g.
    once HridaAI runs again): after a catch-up, the snapshot the target now holds. Idempotent: nothing
    to do when <name> is already gone."""
    work = settings.work_dir
    with _work_lock(work):
        if (work / name / MANIFEST).exists():
            old = work / PROMOTED
            shutil.rmtree(old, ignore_errors=True)
            if (work / SNAPSHOT_DIR).exists():
                os.replace(work / SNAPSHOT_DIR, old)
            os.replace(work / name, work / SNAPSHOT_DIR)
    if not set_aside:
        sweep(settings)
    found = find(settings)
    assert found is not None
    return found


def sweep(settings: Settings) -> None:
    """Remove the snapshot `promote` set aside (also done by the next `take`)."""
    shutil.rmtree(settings.work_dir / PROMOTED, ignore_errors=True)


def load_or_take(settings: Settings) -> Snapshot:
    """Reuse the work dir's snapshot, else take one (or reuse the one a concurrent command just took)."""
    found = find(settings)
    if found is not None:
        return found
    work = ensure_private_dir(settings.work_dir)
    with _work_lock(work):
        found = find(settings)
    return found or take(settings)


def _check_source(source: Path) -> None:
    if source.is_dir():
        raise UsageError(f"{source} is a directory, not HridaAI's SQLite database",
                         hint="point --data-dir / DATA_DIR at the directory that holds the hridaai.db file")
    if not source.parent.is_dir():
        raise UsageError(f"the data directory {source.parent} does not exist",
                         hint="set --data-dir / DATA_DIR to HridaAI's data directory")
    if not source.exists():
        wal = source.with_name(source.name + "-wal")
        extra = f" (but {wal.name} exists: a WAL file without its database cannot be read)" if wal.exists() else ""
        raise UsageError(f"no hridaai.db in {source.parent}{extra}",
                         hint="point --data-dir / DATA_DIR at the directory that holds hridaai.db")


def _check_copy(source: Path, dest: Path, *, key: str | None) -> None:
    """SQLite's quick_check of the copy (every page read once)."""
    out = src.open_copy(dest, key)
    try:
        problems = [r[0] for r in out.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        raise live.copy_failed(source, dest, exc) from exc
    finally:
        out.close()
    # a row breaking its own CHECK constraint is data, not corruption: plan lists it, the load quarantines it
    problems = [p for p in problems if not p.startswith("CHECK constraint failed")] or ["ok"]
    if problems != ["ok"]:
        raise PreflightError(f"{source.name} fails SQLite's integrity check", detail="; ".join(problems[:5]),
                             hint="repair the database (sqlite3 .recover) or restore a backup, then retry")


def sync(snapshot: Snapshot) -> None:
    """fsync the snapshot's SQLite copies (what `take(sync=False)` left to the caller)."""
    root = Path(snapshot.directory)
    for rel in SQLITE_FILES:
        if (root / rel).exists():
            _fsync(root / rel)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_vector_store(store: Path | None, dest: Path, *, linked: dict | None = None) -> dict | None:
    """chroma.sqlite3 through the backup API, segment folders as files (dirs 0700, files 0600), of one moment: the
    folders are copied before the database, and the copy is taken again when any of their files changed between
    the start of the folders' copy and the end of the database's (a persist of chromadb's, HridaAI running)."""
    if store is None or not store.exists():
        return None
    db = store / "chroma.sqlite3"
    if not db.exists():
        raise PreflightError(f"the Chroma store {store} has no chroma.sqlite3 (missing or truncated vector_db/)",
                             hint="restore vector_db/ from a backup, or point CHROMA_DATA_PATH at the Chroma "
                                  "directory HridaAI uses")
    dest.mkdir(mode=0o700)
    for _ in range(SEGMENT_ATTEMPTS):
        before = _segment_files(store)
        for entry in sorted(store.iterdir()):
            if entry.is_dir():
                shutil.copytree(entry, dest / entry.name, copy_function=shutil.copyfile)
        if not (linked is not None and _linked(db, dest / db.name, linked)):
            with _store_damaged():
                live.backup(db, dest / db.name, key=None)
        if _segment_files(store) == before:  # no persist ran from before the folders' copy to after the database's
            break
        shutil.rmtree(dest)
        dest.mkdir(mode=0o700)
    else:
        raise TransientError("Chroma's segment files kept changing while they were copied (HridaAI persisting "
                             "collections)", detail=f"{store}: {SEGMENT_ATTEMPTS} attempts",
                             hint="run the same command again, or while HridaAI is stopped")
    private_tree(dest)  # (the caller checks and fsyncs its chroma.sqlite3, beside the hashing)
    return {"path": str(store)}


def _check_store_copy(source: Path, dest: Path) -> None:
    """quick_check of the vector store's chroma.sqlite3 copy."""
    with _store_damaged():
        _check_copy(source, dest, key=None)


@contextlib.contextmanager
def _store_damaged():
    try:
        yield
    except (PreflightError, UsageError) as exc:
        raise PreflightError(f"the Chroma store's chroma.sqlite3 is damaged: {exc.message}", detail=exc.detail,
                             hint="restore vector_db/ from a backup (HridaAI's documents can also be re-indexed "
                                  "after the migration)") from exc


def _segment_files(store: Path) -> dict[str, tuple[int, int, int]]:
    """(size, mtime_ns, inode) of every file in the store's segment folders: chromadb rewrites them when it persists
    a collection, so an unchanged map means unchanged files."""
    out = {}
    for entry in store.iterdir():
        if entry.is_dir():
            for path in entry.rglob("*"):
                st = path.stat()
                out[str(path.relative_to(store))] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def _describe(directory: Path, source: Path, vector: dict | None, *, previous: Snapshot | None = None) -> Snapshot:
    paths = sorted(p for p in directory.rglob("*") if p.is_file())
    before = {f["path"]: f for f in previous.files} if previous is not None else {}

    diffs: dict = {}

    def entry(path: Path) -> dict:
        rel = str(path.relative_to(directory))
        if rel in SQLITE_FILES and rel in before:
            return _derived_entry(directory, path, previous, before[rel], diffs) or _file_entry(directory, path)
        return _file_entry(directory, path)

    with ThreadPoolExecutor(max_workers=2) as pool:  # hashing (GIL released) overlaps the row counts
        hashed = pool.map(entry, paths)
        conn = src.connect(directory / DB_NAME, immutable=True)
        try:
            counts = {t: src.count(conn, t) for t in src.tables(conn)}
            revision = src.revision(conn)
        finally:
            conn.close()
        files = list(hashed)
    digest = hashlib.sha256("\n".join(f"{f['path']}:{identity(f)}" for f in files).encode()).hexdigest()
    if vector is not None:
        from migrator.sources.chroma import store as chroma_files

        vector.update(chroma_files.describe_store(directory / VECTOR_DIR))
    out = Snapshot(snapshot_id=digest[:32], directory=str(directory), source_revision=revision,
                   row_counts=counts, files=files, created_at=dt.datetime.now(dt.timezone.utc).isoformat(),
                   source={"database": str(source)}, vector_store=vector)
    out.page_diffs = diffs
    return out


def identity(entry: dict) -> str:
    """What names a manifest entry's content: its SHA-256, or for a derived entry the snapshot it was derived from
    and the digest of the pages that differ from that one's."""
    if "derived" in entry:
        return f"derived:{entry['derived']['from']}:{entry['derived']['sha256']}"
    return entry["sha256"]


def _derived_entry(root: Path, path: Path, previous: Snapshot, before: dict, diffs: dict,
                   rel: str | None = None) -> dict | None:
    """A SQLite file identified by what differs from the previous snapshot's copy: the pages that differ (numbers
    and new bytes) and the new length, hashed with the previous snapshot's id. Unchanged: the previous entry's
    identity. None when the two cannot be compared by page (then the whole file is hashed). The page diff is kept
    in diffs[path] (the catch-up's delta starts from it instead of comparing the files again)."""
    from migrator.catchup import pages

    rel = rel or str(path.relative_to(root))
    diff = pages.compare(Path(previous.directory) / rel, path)
    size = path.stat().st_size
    if diff is None or size % diff.page_size:
        return None
    changed = sorted(diff.differing | set(range(diff.common + 1, size // diff.page_size + 1)))
    diffs[rel] = diff
    if not path.is_symlink():  # a linked file is the source's: never touched
        os.chmod(path, 0o600)
    if not changed and size == before["bytes"]:
        return {k: v for k, v in before.items() if k in ("path", "bytes", "sha256", "derived")}
    h = hashlib.sha256(f"{previous.snapshot_id}:{rel}:{size}".encode())
    with path.open("rb") as f:
        for page in changed:
            f.seek((page - 1) * diff.page_size)
            h.update(page.to_bytes(8, "big"))
            h.update(f.read(diff.page_size))
    return {"path": rel, "bytes": size, "derived": {"from": previous.snapshot_id, "pages": len(changed),
                                                    "sha256": h.hexdigest()}}


def _linked(source: Path, dest: Path, linked: dict) -> bool:
    """Link `dest` to `source` when nothing writes it (live.quiescent), recording what the file was then (its
    stat); False (nothing done) otherwise."""
    if not live.quiescent(source):
        return False
    target = source.resolve()
    os.symlink(target, dest)
    linked[str(dest)] = {"source": str(target), "stat": _stat(target.stat())}
    return True


def _stat(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def materialize(snapshot: Snapshot, previous: Snapshot, *, sync: bool = True) -> Snapshot:
    """The linked files of a snapshot taken with link=True copied in (fsynced unless sync=False: then
    `complete_checks` does it), each proven to hold what was read in place: the same pages differ from `previous`'s
    copy with the same bytes (its derived identity), and the source was not written since it was linked.
    TransientError (exit 75) otherwise: the source changed."""
    root = Path(snapshot.directory)
    entries = {f["path"]: f for f in snapshot.files}
    for rel, was in sorted(snapshot.linked.items()):
        link = root / rel
        tmp = link.with_name(f".{link.name}.copy.tmp")
        source = Path(was["source"])
        shutil.copyfile(source, tmp)
        if sync:
            _fsync(tmp)
        os.chmod(tmp, 0o600)
        found = _derived_entry(root, tmp, previous, entries[rel], {}, rel=rel)
        if found is None or identity(found) != identity(entries[rel]) or not unchanged_source(was):
            tmp.unlink(missing_ok=True)
            raise _changed(source)
        os.replace(tmp, link)
    if snapshot.linked:
        snapshot.linked = {}
        write_json(root / MANIFEST, snapshot.asdict(), what="the snapshot")
    return snapshot


def unchanged_source(was: dict) -> bool:
    """Whether a linked source file is as it was when linked (nothing wrote it since)."""
    try:
        return _stat(os.stat(was["source"])) == was["stat"]
    except OSError:
        return False


def check_linked_sources(linked: dict) -> None:
    """TransientError (exit 75) when a file `take(link=True)` linked was written since."""
    for was in linked.values():
        if not unchanged_source(was):
            raise _changed(Path(was["source"]))


def _changed(source: Path) -> TransientError:
    return TransientError(f"{source.name} changed while catch-up read it: is HridaAI still running?",
                          detail=f"{source}: written after catch-up took its snapshot",
                          hint="stop HridaAI (every replica) and run `migrate catch-up` again; if this catch-up had "
                               "already written to the target, it refuses to go on with a changed source: then "
                               "migrate again into an empty target")


def complete_checks(settings: Settings, snapshot: Snapshot) -> Snapshot:
    """The checks `take(defer_checks=True)` left, once the files are on disk: each deferred SQLite file fsynced, its
    quick_check, its derived identity proven again against the previous snapshot while `promote` keeps that one set
    aside (the copy is what was read, also after a crash before it reached the disk), and its whole SHA-256 added to
    the manifest. PreflightError (exit 4) when a copy fails."""
    if not snapshot.deferred:
        return snapshot
    aside = find(settings, name=PROMOTED)  # the previous snapshot, set aside by promote until `sweep`
    proven = set(snapshot.linked)  # materialize proves these here: not compared with `aside` a second time
    if snapshot.linked:  # read in place until now: copied in, proven to be what was read
        if aside is None:
            raise PreflightError("the snapshot still reads source files in place, and the snapshot it was derived "
                                 "from is gone", detail=", ".join(sorted(snapshot.linked)),
                                 hint="migrate again into an empty target (`migrate run` with a new --work-dir)")
        materialize(snapshot, aside, sync=False)
    root = Path(snapshot.directory)
    for rel in snapshot.deferred:
        _fsync(root / rel)
    entries = {f["path"]: f for f in snapshot.files}
    with ThreadPoolExecutor(max_workers=2) as pool:
        checks = [pool.submit(_check_copy, root / rel, root / rel, key=settings.sqlcipher_key if rel == DB_NAME
                              else None) for rel in snapshot.deferred]
        for rel in snapshot.deferred:
            derived = entries[rel].get("derived")
            if aside is not None and derived and derived["from"] == aside.snapshot_id and rel not in proven:
                again = _derived_entry(root, root / rel, aside, entries[rel], {})
                if again is None or identity(again) != identity(entries[rel]):
                    raise PreflightError(f"the snapshot's {rel} is not what catch-up read (damaged before it "
                                         "reached the disk?)", detail=str(root / rel),
                                         hint="the target holds what was read: check the machine's disk; then "
                                              "migrate again into an empty target")
        sums = {rel: _file_entry(root, root / rel)["sha256"] for rel in snapshot.deferred}
        for job in checks:
            job.result()
    for f in snapshot.files:
        if f["path"] in sums:
            f["sha256"] = sums[f["path"]]
    snapshot.deferred = []
    write_json(root / MANIFEST, snapshot.asdict(), what="the snapshot")
    return snapshot


def _file_entry(root: Path, path: Path) -> dict:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    if not path.is_symlink():
        os.chmod(path, 0o600)
    return {"path": str(path.relative_to(root)), "bytes": path.stat().st_size, "sha256": h.hexdigest()}
