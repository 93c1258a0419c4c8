"""Facts about a Chroma store read from its chroma.sqlite3 alone (no chromadb import, nothing written)."""

from __future__ import annotations

import functools
import json
import sqlite3
import tempfile
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


# The internal schema versions chromadb releases write, measured by `measure_schema_versions` (a test measures the
# installed one again): a known version costs the plan nothing, where measuring imports chromadb and makes a store
# (about a second, on every fresh work dir).
KNOWN_SCHEMA_VERSIONS: dict[str, dict[str, int]] = {
    "1.5.9": {"embeddings_queue": 2, "metadb": 6, "sysdb": 10},
}


@functools.lru_cache(maxsize=1)
def installed_schema_versions(cache_dir: Path | None = None) -> dict[str, int]:
    """The internal schema versions the installed chromadb writes: known for the releases in
    KNOWN_SCHEMA_VERSIONS, else measured once and kept per chromadb version in `cache_dir` (the private work dir)."""
    version = metadata.version("chromadb")
    if version in KNOWN_SCHEMA_VERSIONS:
        return dict(KNOWN_SCHEMA_VERSIONS[version])
    cache = cache_dir / f".chromadb-{version}-schema.json" if cache_dir else None
    if cache is not None and cache.exists():
        return json.loads(cache.read_text())
    found = measure_schema_versions()
    if cache is not None:
        cache.write_text(json.dumps(found))
    return found


def measure_schema_versions() -> dict[str, int]:
    """What the installed chromadb writes: a new empty store in a temp dir. chromadb 1.x applies its migrations
    from its Rust core, so the package's .sql files do not say which ones it knows; a store it creates does."""
    import chromadb
    from chromadb.config import Settings

    with tempfile.TemporaryDirectory(prefix="hm-chroma-") as tmp:
        client = chromadb.PersistentClient(path=tmp, settings=Settings(anonymized_telemetry=False))
        del client
        conn = sqlite3.connect(Path(tmp) / "chroma.sqlite3")
        try:
            return {r[0]: r[1] for r in conn.execute("SELECT dir, max(version) FROM migrations GROUP BY dir")}
        finally:
            conn.close()


def newer_than_installed(versions: dict[str, int], *, cache_dir: Path | None = None) -> dict[str, tuple[int, int]]:
    """dir -> (store's version, installed chromadb's) for every schema part the installed chromadb does not know.

    chromadb itself opens (and may rewrite) a store with newer migrations without a word: this is the check.
    """
    known = installed_schema_versions(cache_dir)
    return {d: (v, known.get(d, 0)) for d, v in sorted(versions.items()) if v > known.get(d, 0)}
