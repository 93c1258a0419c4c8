"""Fault injection for tests: stop the process at a named phase of `migrate run`, deterministically.

`HRIDAAI_MIGRATE_STOP_AT=index` (a comma-separated list of the points below) makes the process stop itself with
SIGSTOP right after it has written the first progress event of that phase, before it does any of the phase's work.
A test that reads the JSON events then sends SIGKILL and knows where the run died, however fast the machine is: a
kill aimed at a 20 ms phase by a timer misses it on a fast machine. Unset (always, in production) it costs one
dict lookup per event.

The points, in the order `migrate run` passes them: snapshot, plan, schema, copy (a table's load starts),
vectors (the vector phase starts), vector-group (a group of small collections has just committed: the next
groups have not), vector-batch (a batch of a collection loaded alone has just committed: its next one has not),
index (secondary or vector index builds), stamp (sequences, alembic); and of `migrate catch-up`:
delta (the delta is found: nothing written yet), catch-up (a step, the removals or writes of one table or
collection, has just committed), ready (`--then-verify`:
the target's state is pinned and READY announced, verify has not started); and of `migrate files`:
upload (an object's first part has been sent, the upload is not complete), files (a row's rewrite has just
committed).
"""

from __future__ import annotations

import os
import signal

ENV = "HRIDAAI_MIGRATE_STOP_AT"
POINTS = ("snapshot", "plan", "schema", "copy", "vectors", "vector-group", "vector-batch", "index", "stamp", "delta",
          "catch-up", "ready", "upload", "files")
_FINALIZE_STEPS = {"vector-index": "index", "vector-secondary-indexes": "index", "indexes": "index",
                   "sequences": "stamp", "alembic": "stamp"}
_stopped: set[str] = set()


def point_of(event: dict) -> str | None:
    """The phase (one of POINTS, or a finalize step's own name) that a progress event belongs to."""
    stage = event.get("stage")
    if stage == "vectors" and "group" in event:
        return "vector-group"
    if stage == "vectors" and "batch" in event:
        return "vector-batch"
    if stage == "files":
        return "upload" if "uploaded" in event else "files"
    if stage == "catch-up":  # its committed steps, its delta found, its READY; not the timing of its other phases
        if event.get("phase") in ("ready", "delta"):
            return event["phase"]
        return stage if "step" in event else None
    if stage in ("snapshot", "plan", "schema", "vectors"):
        return stage
    if stage == "load":
        return "vectors" if str(event.get("unit", "")).startswith("vector:") else "copy"
    if stage == "finalize":
        step = event.get("step")
        return _FINALIZE_STEPS.get(step, step)
    return None


def reached(event: dict) -> None:
    """Called after an event is written: SIGSTOP this process the first time a point named in the env is reached."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point = point_of(event)
    if point in wanted.split(",") and point not in _stopped:  # (any thread: SIGSTOP stops the whole process)
        _stopped.add(point)
        os.kill(os.getpid(), signal.SIGSTOP)
