"""Can this process read the source? When not: which file, which uid, and what to do — an operator's error, not a bug.

HridaAI's volume is often root-owned while the Job runs as uid 10001, so this is met in the field. The check opens
every source file for reading (and lists every directory) before the snapshot copies anything; it reads no content.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from migrator.errors import MigrationError, PreflightError, WorkDirError

HINT = ("let uid {uid} read them: in the Kubernetes Job set securityContext.runAsUser to the files' owner or "
        "fsGroup / supplementalGroups to their group; elsewhere run as the owner, or make them readable "
        "(chmod -R g+rX or o+rX on DATA_DIR). Nothing was written; run the same command again afterwards")


def identity() -> str:
    """'uid 10001 (gid 10001, groups 10001, 2000)': who the kernel checks permissions for."""
    groups = ", ".join(str(g) for g in sorted(set(os.getgroups()) | {os.getegid()}))
    return f"uid {os.geteuid()} (gid {os.getegid()}, groups {groups})"


def exists(path: Path) -> bool | None:
    """True / False, or None when this process may not look (a directory on the way is not searchable)."""
    try:
        path.stat()
    except PermissionError:
        return None
    except OSError:
        return False
    return True


def check_source(db: Path, vector_store: Path | None) -> None:
    """Raise PreflightError (exit 4) naming the first source file or directory this process cannot read."""
    paths = [db.parent] + [db.with_name(db.name + s) for s in ("", "-wal", "-shm", "-journal")]
    for path in paths:
        _check(path)
    if vector_store is not None and exists(vector_store):
        _check(vector_store)
        for root, dirs, files in os.walk(vector_store, onerror=_raise):
            for name in dirs + files:
                _check(Path(root) / name)


def _raise(exc: OSError) -> None:
    raise exc


def _check(path: Path) -> None:
    try:
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode):
            with os.scandir(path):
                pass
        elif stat.S_ISREG(st.st_mode):
            os.close(os.open(path, os.O_RDONLY))
    except FileNotFoundError:
        return
    except PermissionError as exc:
        raise unreadable_source(Path(exc.filename or path)) from exc


def unreadable_source(path: Path) -> PreflightError:
    """The error for a source path this process may not read (or reach)."""
    blocker = _blocker(path)
    return PreflightError(f"cannot read the source: permission denied on {path}",
                          detail=f"hridaai-migrate runs as {identity()}; {_describe(blocker)}",
                          hint=HINT.format(uid=os.geteuid()))


def _blocker(path: Path) -> Path:
    """The path itself, or the nearest directory above it that this process may not search."""
    for p in [*reversed(path.parents), path]:
        if exists(p) is None:  # its directory may not be searched
            return p.parent
    return path


def _describe(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return f"{path} cannot be looked at"
    kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
    return f"the {kind} {path} belongs to uid {st.st_uid}, gid {st.st_gid}, mode {stat.S_IMODE(st.st_mode):04o}"


def explain(exc: PermissionError, source_dirs: list[Path]) -> MigrationError:
    """An operator's error for a PermissionError met anywhere: the source (exit 4) or the work dir (exit 1)."""
    path = Path(exc.filename or "")
    if exc.filename and any(path == d or d in path.parents for d in source_dirs):
        return unreadable_source(path)
    err = WorkDirError(f"permission denied on {exc.filename or 'a file'}",
                       detail=f"hridaai-migrate runs as {identity()}; {_describe(_blocker(path))}"
                       if exc.filename else f"hridaai-migrate runs as {identity()}",
                       hint=f"give uid {os.geteuid()} write access to --work-dir / HRIDAAI_MIGRATE_WORK_DIR (an "
                            "emptyDir in the Job), then run the same command again")
    err.__cause__ = exc
    return err
