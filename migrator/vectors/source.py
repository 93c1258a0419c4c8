"""Where vectors are read from: a scratch copy of the snapshot's Chroma store, or a Chroma server (HTTP mode).

chromadb rewrites a store it opens (even to read), so it never opens the live store nor the snapshot itself: it
opens WORK_DIR/chroma-read, a copy of the snapshot's vector_db made once per snapshot.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from migrator.errors import work_dir_error
from migrator.settings import Settings
from migrator.snapshot import Snapshot
from migrator.sources.chroma import client as chroma, collections as chroma_catalog, direct as chroma_direct
from migrator.sources.chroma.client import CollectionInfo
from migrator.workdir import private_tree

log = logging.getLogger(__name__)

SCRATCH = "chroma-read"
CHECK = "chroma-check"
MARKER = ".snapshot-id"


def client(settings: Settings, snapshot: Snapshot) -> Any | None:
    """A chromadb client for the vectors to migrate, or None when the source has no vector store."""
    if settings.chroma_http_host:
        return chroma.http_client(settings.chroma_http_host, port=settings.chroma_http_port,
                                  ssl=settings.chroma_http_ssl, headers=dict(settings.chroma_http_headers),
                                  tenant=settings.chroma_tenant, database=settings.chroma_database)
    if snapshot.vector_path is None:
        return None
    return chroma.open_client(_scratch(settings.work_dir, snapshot))


class BatchSource:
    """Where the load reads each collection's batches from: the snapshot's own files (chroma_direct: segment files
    and the embeddings queue) when that reader knows the store and the collection, else chromadb's `get` pages. Both
    yield the same chunks in the same order (tests/test_chroma_direct.py), so a resume may switch between them.

    One direct store (one SQLite connection, one scan of the queue) serves every collection; close() it at the end.
    """

    def __init__(self, settings: Settings, snapshot: Snapshot) -> None:
        self._settings, self._snapshot = settings, snapshot
        self._client: Any = None
        self._store: chroma_direct.DirectStore | None = None
        self._store_opened = False
        self._lock = threading.Lock()
        self.read_by: dict[str, str] = {}

    def client(self) -> Any:
        """The chromadb client, made (and the scratch copy taken) on first use only."""
        with self._lock:
            if self._client is None:
                self._client = client(self._settings, self._snapshot)
            return self._client

    def store(self) -> chroma_direct.DirectStore | None:
        """The snapshot's store opened for direct reading (None: unknown layout, or not a snapshot source)."""
        with self._lock:
            if not self._store_opened:
                self._store_opened = True
                if kind(self._settings, self._snapshot) == "snapshot":
                    self._store = chroma_direct.open_store(self._snapshot.vector_path)
            return self._store

    def open(self, collection: str, *, start: int, batch_size: int) -> Iterator[chroma.Batch]:
        """The collection's batches from ordinal `start` (a generator: close() it when stopping early)."""
        store = self.store()
        if store is None:
            self.read_by[collection] = "chromadb"
            return chroma.iter_batches_client(self.client(), collection, batch_size=batch_size, start=start)
        return self._direct(store, collection, start, batch_size)

    def _direct(self, store, collection: str, start: int, batch_size: int) -> Iterator[chroma.Batch]:
        """Batches from the files; from chromadb when the reader refuses the collection or meets a value it
        does not know (from that batch on)."""
        reader = store.reader(collection, fallback_col=_LazyCollection(self, collection))
        if reader is None:
            self.read_by[collection] = "chromadb"
            yield from chroma.iter_batches_client(self.client(), collection, batch_size=batch_size, start=start)
            return
        self.read_by[collection] = "files" if not reader.fallback_count else "files+chromadb"
        position = start
        try:
            for batch in reader.iter_batches(batch_size=batch_size, start=start):
                yield batch
                position = batch.end
        except chroma_direct.UnexpectedValue as exc:
            log.warning("collection %s: %s; reading on with chromadb from ordinal %d", collection, exc, position)
            self.read_by[collection] = "files, then chromadb"
            yield from chroma.iter_batches_client(self.client(), collection, batch_size=batch_size, start=position)

    def close(self) -> None:
        """Close the direct store (the chromadb client has no close)."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


class _LazyCollection:
    """The chromadb collection for the vectors the files do not hold, opened on the first `get` only."""

    def __init__(self, source: BatchSource, name: str) -> None:
        self._source, self.name = source, name
        self._col: Any = None

    def get(self, **kwargs: Any) -> Any:
        """chromadb's Collection.get."""
        if self._col is None:
            self._col = self._source.client().get_collection(name=self.name, embedding_function=None)
        return self._col.get(**kwargs)


def batches(settings: Settings, snapshot: Snapshot) -> BatchSource:
    """The batch source of the load (close() it when done)."""
    return BatchSource(settings, snapshot)


def describe_files(snapshot: Snapshot, *, scan: bool = False
                   ) -> tuple[list[CollectionInfo], dict[str, dict[str, str]], bool] | None:
    """(collections, chunk-id collisions, whether the load will need chromadb too) read from the snapshot's Chroma
    files as chromadb's describe_client(scan) gives them; None when chroma_direct does not know the store.

    Every collection's reader is made once (its queue replayed, no vector read): with scan, a collection whose every
    vector the files and the queue give has none lost; one they do not is described by chromadb (None here)."""
    store = chroma_direct.open_store(snapshot.vector_path) if snapshot.vector_path is not None else None
    if store is None:
        return None
    try:
        infos = chroma_catalog.describe(store, scan=scan)
        if infos is None:
            return None
        # without a fallback, a reader is refused when any vector must come through chromadb
        needs_client = any(info.count and store.reader(info.name) is None for info in infos)
        if needs_client and scan:
            return None
        return infos, chroma_catalog.collisions(store, infos), needs_client
    finally:
        store.close()


def check_client(settings: Settings, snapshot: Snapshot, store: chroma_direct.DirectStore, names: list[str]) -> Any:
    """A chromadb client on WORK_DIR/chroma-check: chroma.sqlite3 and the segment folders of collections `names`
    only (verify's cross-check reads those; drop_check_copy removes it)."""
    segments = chroma_catalog.segment_ids(store, names)
    return chroma.open_client(_scratch(settings.work_dir, snapshot, name=CHECK, segments=segments))


def drop_check_copy(settings: Settings) -> None:
    """Remove verify's cross-check copy."""
    shutil.rmtree(settings.work_dir / CHECK, ignore_errors=True)


def drop_scratch(settings: Settings) -> None:
    """Remove the scratch copy chromadb opened (a command's end): chromadb rewrites the index files of what it opens
    from buffers it does not clear, so they may hold bytes of the process's freed memory (seen: a password of the
    target's URL in a data_level0.bin). Made again from the snapshot when next needed."""
    if not (settings.work_dir / SCRATCH).exists():
        return
    with _locked(settings.work_dir, SCRATCH):
        shutil.rmtree(settings.work_dir / SCRATCH, ignore_errors=True)


@contextlib.contextmanager
def _locked(work_dir: Path, name: str):
    """WORK_DIR/.<name>.lock held exclusively: one process at a time makes or removes WORK_DIR/<name>."""
    with os.fdopen(os.open(work_dir / f".{name}.lock", os.O_WRONLY | os.O_CREAT, 0o600), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def prepare(settings: Settings, snapshot: Snapshot) -> None:
    """Take the scratch copy chromadb opens (snapshot sources), without opening it here."""
    if kind(settings, snapshot) == "snapshot":
        _scratch(settings.work_dir, snapshot)


def kind(settings: Settings, snapshot: Snapshot) -> str | None:
    """'http', 'snapshot' or None."""
    if settings.chroma_http_host:
        return "http"
    return "snapshot" if snapshot.vector_path is not None else None


def _scratch(work_dir: Path, snapshot: Snapshot, *, name: str = SCRATCH, segments: list[str] | None = None) -> Path:
    """WORK_DIR/<name>: copied to a temp dir, made private, then renamed (a partial copy is never used); under an
    exclusive lock, so that worker processes asking at once make it once. `segments`: copy only chroma.sqlite3 and
    these segment folders (chromadb opens a collection's files when that collection is read, not before)."""
    dest = work_dir / name
    marker = dest / MARKER
    want = snapshot.snapshot_id if segments is None else f"{snapshot.snapshot_id} {' '.join(sorted(segments))}"
    tmp = work_dir / f".{name}.tmp"
    try:
        with _locked(work_dir, name):
            if marker.exists() and marker.read_text() == want:
                return dest
            shutil.rmtree(dest, ignore_errors=True)
            shutil.rmtree(tmp, ignore_errors=True)
            if segments is None:
                shutil.copytree(snapshot.vector_path, tmp, copy_function=shutil.copyfile)
            else:
                tmp.mkdir()
                shutil.copyfile(snapshot.vector_path / "chroma.sqlite3", tmp / "chroma.sqlite3")
                for seg in segments:
                    if (snapshot.vector_path / seg).is_dir():
                        shutil.copytree(snapshot.vector_path / seg, tmp / seg, copy_function=shutil.copyfile)
            private_tree(tmp)
            (tmp / MARKER).write_text(want)
            os.replace(tmp, dest)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise work_dir_error(_first_os_error(exc), what="the scratch copy of the Chroma store") from exc
    return dest


def _first_os_error(exc: OSError) -> OSError:
    """copytree collects failures into one shutil.Error of (src, dst, why) tuples: the first, as an OSError."""
    if not isinstance(exc, shutil.Error) or not exc.args or not exc.args[0]:
        return exc
    _src, dst, why = exc.args[0][0]
    return OSError(errno.ENOSPC if "No space left" in str(why) else errno.EIO, str(why), dst)


def ids(client_: Any, collection: str, *, page: int = 10_000) -> list[str]:
    """Every id of a collection (ids only: cheap), in the collection's stable order."""
    col = client_.get_collection(name=collection, embedding_function=None)
    out: list[str] = []
    total = col.count()
    for offset in range(0, total, page):
        out += col.get(include=[], limit=page, offset=offset)["ids"]
    return out
