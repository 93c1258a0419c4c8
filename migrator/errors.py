"""The error model: one exception type carrying what went wrong, where, and what to do next.

Exit codes are part of the contract with a Kubernetes Job's podFailurePolicy.
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_DIFFERENCES = 3
EXIT_PREFLIGHT = 4
EXIT_TRANSIENT = 75


class MigrationError(Exception):
    """A failure an operator can act on: `message` (what), `detail` (where), `hint` (what next)."""

    exit_code = EXIT_FATAL

    def __init__(self, message: str, *, detail: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.hint = hint

    def render(self) -> str:
        """psql-like multi-line rendering: ERROR / DETAIL / HINT."""
        lines = [f"ERROR: {self.message}"]
        if self.detail:
            lines.append(f"DETAIL: {self.detail}")
        if self.hint:
            lines.append(f"HINT: {self.hint}")
        return "\n".join(lines)


class UsageError(MigrationError):
    """Bad flags, settings or paths given by the operator."""

    exit_code = EXIT_USAGE


class PreflightError(MigrationError):
    """A check refused to start (or continue) the migration; nothing unsafe was written."""

    exit_code = EXIT_PREFLIGHT


class TransientError(MigrationError):
    """Lost connection, server restart, interruption: `migrate run --resume` continues."""

    exit_code = EXIT_TRANSIENT


class VerificationFailed(MigrationError):
    """Verify measured differences between the snapshot and the target."""

    exit_code = EXIT_DIFFERENCES


class WorkDirError(MigrationError):
    """The work directory could not be written (disk full, quota, read-only); nothing half-written is kept."""


WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # a write into the work dir failed


def work_dir_error(exc: OSError, *, what: str) -> WorkDirError:
    """An operator-facing error for a failed write into the work dir (ENOSPC and friends)."""
    reason = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exhausted",
              errno.EROFS: "the file system is read-only"}.get(exc.errno, exc.strerror or str(exc))
    err = WorkDirError(f"could not write {what}: {reason}", detail=f"{exc.filename or ''} {exc}".strip(),
                       hint="free space in (or choose another) --work-dir / HRIDAAI_MIGRATE_WORK_DIR, then run the "
                            "same command again: partial files were removed, `migrate run --resume` continues a run")
    err.__cause__ = exc
    return err
