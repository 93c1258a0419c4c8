"""What a stage runs with, as one object: the settings, the plan, the snapshot the plan was made from, where
progress goes and whether to stop.

The load, the vector lane and verify used to thread these five values through about ten functions each; they are
one thing (one run of one plan over one snapshot), as pgcopydb's CopyDataSpec or alembic's MigrationContext are.
A worker process gets `ctx.portable()` (settings, plan and snapshot pickle; progress and stop are the process's
own) and puts its own progress and stop flag back with `ctx.with_(...)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from migrator.plan.model import Plan
from migrator.progress import NullProgress, Progress
from migrator.settings import Settings
from migrator.snapshot import Snapshot


class StopFlag:
    """Set by the first SIGTERM/SIGINT: finish the current batch, commit it, exit 75."""

    def __init__(self) -> None:
        self.requested = False


@dataclass(frozen=True)
class RunContext:
    """One run of `plan` over `snapshot` with `settings`."""

    settings: Settings
    plan: Plan
    snapshot: Snapshot
    progress: Progress = field(default_factory=NullProgress, compare=False)
    stop: StopFlag = field(default_factory=StopFlag, compare=False)

    def portable(self) -> "RunContext":
        """What a worker process is sent: no progress sink, no stop flag of this process."""
        return replace(self, progress=NullProgress(), stop=StopFlag())

    def with_(self, *, progress: Progress, stop) -> "RunContext":
        """The same run with this process's own progress sink and stop flag."""
        return replace(self, progress=progress, stop=stop)
