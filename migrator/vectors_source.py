"""Where vectors are read from: a scratch copy of the snapshot's Chroma store, or a Chroma server (HTTP mode).

chromadb rewrites a store it opens (even to read), so it never opens the live store nor the snapshot itself: it
opens WORK_DIR/chroma-read, a copy of the snapshot's vector_db made once per snapshot.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from migrator.settings import Settings
from migrator.snapshot import Snapshot
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


def kind(settings: Settings, snapshot: Snapshot) -> str | None:
    """'http', 'snapshot' or None."""
    if settings.chroma_http_host:
        return "http"
    return "snapshot" if snapshot.vector_path is not None else None


def _scratch(work_dir: Path, snapshot: Snapshot) -> Path:
    dest = work_dir / SCRATCH
    marker = dest / MARKER
    if marker.exists() and marker.read_text() == snapshot.snapshot_id:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(snapshot.vector_path, dest, copy_function=shutil.copyfile)
    marker.write_text(snapshot.snapshot_id)
    return dest


def ids(client_: Any, collection: str, *, page: int = 10_000) -> list[str]:
    """Every id of a collection (ids only: cheap), in the collection's stable order."""
    col = client_.get_collection(name=collection, embedding_function=None)
    out: list[str] = []
    total = col.count()
    for offset in range(0, total, page):
        out += col.get(include=[], limit=page, offset=offset)["ids"]
    return out
