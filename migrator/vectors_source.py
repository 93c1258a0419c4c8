"""Where vectors are read from: a scratch copy of the snapshot's Chroma store, or a Chroma server (HTTP mode).

chromadb rewrites a store it opens (even to read), so it never opens the live store nor the snapshot itself: it
opens WORK_DIR/chroma-read, a copy of the snapshot's vector_db made once per snapshot.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from migrator.errors import work_dir_error
from migrator.settings import Settings
from migrator.snapshot import Snapshot, private_tree
from migrator.sources import chroma

SCRATCH = "chroma-read"
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
    """Where the load reads each collection's batches from (chromadb's own `get` pages)."""

    def __init__(self, client_: Any) -> None:
        self.client = client_

    def open(self, collection: str, *, start: int, batch_size: int) -> Iterator[chroma.Batch]:
        """The collection's batches from ordinal `start` (a generator: close() it when stopping early)."""
        return chroma.iter_batches_client(self.client, collection, batch_size=batch_size, start=start)

    def close(self) -> None:
        """Release what the source holds (nothing for a chromadb client: it is cached per store)."""


def batches(settings: Settings, snapshot: Snapshot) -> BatchSource:
    """The batch source of the load; the caller closes it."""
    return BatchSource(client(settings, snapshot))


def kind(settings: Settings, snapshot: Snapshot) -> str | None:
    """'http', 'snapshot' or None."""
    if settings.chroma_http_host:
        return "http"
    return "snapshot" if snapshot.vector_path is not None else None


def _scratch(work_dir: Path, snapshot: Snapshot) -> Path:
    """WORK_DIR/chroma-read: copied to a temp dir, made private, then renamed (a partial copy is never used)."""
    dest = work_dir / SCRATCH
    marker = dest / MARKER
    if marker.exists() and marker.read_text() == snapshot.snapshot_id:
        return dest
    tmp = work_dir / f".{SCRATCH}.tmp"
    try:
        shutil.rmtree(dest, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(snapshot.vector_path, tmp, copy_function=shutil.copyfile)
        private_tree(tmp)
        (tmp / MARKER).write_text(snapshot.snapshot_id)
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
