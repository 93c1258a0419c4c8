"""The work directory's files: private (0700 directories, 0600 files) and written atomically, so that a failed
write (disk full, quota) never leaves a partial snapshot manifest or report behind."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from migrator.errors import work_dir_error


def ensure_private_dir(path: Path) -> Path:
    """mkdir -p with mode 0700 (and tighten an existing one)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def private_tree(root: Path) -> None:
    """Directories 0700 and files 0600 under root (copytree copies the source's modes onto directories)."""
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():  # a snapshot's link to a source file: the source's mode is not ours to change
            os.chmod(path, 0o700 if path.is_dir() else 0o600)


def write_private(path: Path, text: str | Iterable[str], *, what: str | None = None) -> Path:
    """0600, written to a temp file then renamed. Raises WorkDirError (exit 1) naming `what` (default: the file)
    when the write fails; the temp file is removed."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.writelines([text] if isinstance(text, str) else text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise work_dir_error(exc, what=what or path.name) from exc
    return path


def write_json(path: Path, doc: dict, *, what: str | None = None) -> Path:
    """A JSON document (indented, UTF-8 kept), written like write_private."""
    return write_private(path, json.dumps(doc, indent=1, ensure_ascii=False, default=str), what=what)
