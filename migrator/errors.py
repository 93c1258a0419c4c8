"""The error model: one exception type carrying what went wrong, where, and what to do next.

Exit codes are part of the contract with a Kubernetes Job's podFailurePolicy.
"""

from __future__ import annotations

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
