"""Facts about a Chroma store read from its chroma.sqlite3 alone (no chromadb import, nothing written)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from migrator.errors import PreflightError
from migrator.sources import sqlite as src


def describe_store(store: Path) -> dict:
    """Internal schema versions (which chromadb wrote it), collection count, installed chromadb version."""
    conn = src.connect(store / "chroma.sqlite3", immutable=True)
    try:
        versions = {r[0]: r[1] for r in conn.execute("SELECT dir, max(version) FROM migrations GROUP BY dir")}
        collections = conn.execute("SELECT count(*) FROM collections").fetchone()[0]
    except Exception as exc:  # sqlite3.DatabaseError and missing tables alike
        raise PreflightError("the Chroma store's chroma.sqlite3 is not a Chroma database",
                             detail=f"{store}: {exc}", hint="check CHROMA_DATA_PATH / DATA_DIR/vector_db") from exc
    finally:
        conn.close()
    try:
        installed = metadata.version("chromadb")
    except metadata.PackageNotFoundError:
        installed = None
    return {"schema_versions": versions, "collections": collections, "chromadb_installed": installed}
