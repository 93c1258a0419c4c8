"""Which uploads a migration moves: every `file` row whose path is a local upload, with the file it names under the
source's `uploads/` directory.

A row's path is where the app wrote the file *where it ran*: in the container usually `/app/backend/data/uploads/
<id>_<name>`, not this machine's DATA_DIR. So a path is mapped by its name: what follows its last `/uploads/` (else
its last component) is looked up under `<DATA_DIR>/uploads/`, as HridaAI's own local provider names uploads there.
A path that is already a URI (s3://, gs://, http(s)://, ...) is remote: left as it is. A row without a path has no
upload. A name that would leave `uploads/` (`..`), or a file that is not there, is unresolved: reported by the row's
id under the `missing_upload` policy, never skipped silently.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from migrator.sources import sqlite as src

URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass(frozen=True)
class Upload:
    """One `file` row and what its path resolves to."""

    file_id: str
    path: str  # as stored in the row
    name: str  # the upload's name relative to uploads/ ("<id>_<filename>"): the object's name
    local: Path | None  # the file under the source's uploads/, None when unresolved
    problem: str = ""  # why it is unresolved


@dataclass
class Inventory:
    """Every `file` row, sorted into what `migrate files` does with it."""

    uploads: list[Upload]  # resolved: to move
    unresolved: list[Upload]  # a local path whose file is not under uploads/
    remote: int = 0  # already a URI: left as it is
    no_path: int = 0  # NULL or empty path


def upload_name(path: str) -> str | None:
    """The name under uploads/ that a stored local path refers to; None when it would leave that directory."""
    norm = path.replace("\\", "/")
    name = norm.rsplit("/uploads/", 1)[1] if "/uploads/" in norm else norm.rsplit("/", 1)[-1]
    parts = PurePosixPath(name).parts
    if not parts or any(p in ("..", ".", "") for p in parts) or name.startswith("/"):
        return None
    return "/".join(parts)


def inventory(db: sqlite3.Connection, uploads_dir: Path) -> Inventory:
    """Sort the snapshot's `file` rows (read-only connection `db`) against `uploads_dir`."""
    inv = Inventory([], [])
    has_path = any(r[1] == "path" for r in db.execute("PRAGMA table_info(file)"))
    if not has_path:
        return inv
    db.text_factory = src.lenient_text
    try:
        rows = db.execute("SELECT id, path FROM file ORDER BY id").fetchall()
    finally:
        db.text_factory = str
    for file_id, path in rows:
        if path is None or str(path).strip() == "":
            inv.no_path += 1
            continue
        path = str(path)
        if URI.match(path):
            inv.remote += 1
            continue
        name = upload_name(path)
        if name is None:
            inv.unresolved.append(Upload(str(file_id), path, "", None, "the name leaves uploads/ (..)"))
            continue
        local = uploads_dir / name
        if not local.is_file():
            inv.unresolved.append(Upload(str(file_id), path, name, None, f"no file {local}"))
            continue
        inv.uploads.append(Upload(str(file_id), path, name, local))
    return inv
