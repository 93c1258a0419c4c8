"""One library function per subcommand; the single asyncio.run edge. The CLI is a thin layer over these."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from migrator import embedded, ledger, snapshot as snap, workdir
from migrator.catalog import schema as catalog
from migrator.context import RunContext, StopFlag
from migrator.errors import MigrationError, PreflightError, TransientError, UsageError, VerificationFailed
from migrator.plan import build as plan_stage
from migrator.progress import Progress, choose
from migrator.settings import Settings

log = logging.getLogger(__name__)
REPORTS = "reports"


@dataclass
class Outcome:
    """What a command produced: a result object (asdict/asstr) plus notes for people."""

    result: object
    notes: list[str]


def _drops_scratch(command):
    """The command removes chromadb's scratch copy of the store when it ends, whichever way (vectors.source)."""
    @functools.wraps(command)
    def wrapped(settings: Settings, *args, **kwargs):
        try:
            return command(settings, *args, **kwargs)
        finally:
            from migrator.vectors import source as vectors_source

            vectors_source.drop_scratch(settings)

    return wrapped


def snapshot(settings: Settings) -> Outcome:
    """`migrate snapshot`: copy the source (hridaai.db and vector_db/) into the work dir, consistently.

    Raises UsageError (exit 2) for a missing data dir or database, PreflightError (exit 4) for a source that cannot
    be read (permissions, damage, encryption), WorkDirError (exit 1) when the work dir cannot be written."""
    return Outcome(snap.take(settings), [])


@_drops_scratch
def plan(settings: Settings) -> Outcome:
    """`migrate plan`: what `run` would do, read-only on both sides (the snapshot and plan.json aside).

    Raises PreflightError (exit 4) after printing the plan when it has error-level checks."""
    settings, notes = _target(settings, start=True)
    s = snap.load_or_take(settings)
    p = asyncio.run(plan_stage.build(settings, s))
    _save_report(settings, "plan.json", p.asdict())
    if p.errors:  # printed like any plan, then exit 4
        err = p.refusal()
        err.outcome = Outcome(p, notes)
        raise err
    return Outcome(p, notes)


@_drops_scratch
def run(settings: Settings, *, resume: bool = False, progress: Progress | None = None) -> Outcome:
    """`migrate run [--resume]`: snapshot (if none yet), plan, load; exactly once, resumable."""
    settings, notes = _target(settings, start=True)
    progress = progress or choose(settings.log_format)
    from migrator.load.workers import Pool  # here: other commands need none of the load's imports

    pool = Pool(settings.jobs, progress) if settings.jobs > 1 else None  # their start-up beside the snapshot's I/O
    try:
        progress.event("snapshot", state="start")
        s = snap.load_or_take(settings)
        progress.event("plan", state="start", snapshot=s.snapshot_id)
        p = asyncio.run(plan_stage.build(settings, s, scan=False))
        _save_report(settings, "plan.json", p.asdict())
        report = _run_load(settings, p, s, resume=resume, progress=progress, pool=pool)
    finally:
        if pool is not None:
            pool.close(kill=True)  # nothing when the load closed it; never started: not needed
    _export_reports(settings)
    if report.interrupted:
        raise load_interrupted(report)
    return Outcome(report, notes)


def load_interrupted(report) -> MigrationError:
    """The first SIGTERM/SIGINT drained the current batch: exit 75 so the Job retries with --resume."""
    return TransientError("interrupted: the current batch was committed with its ledger row",
                          hint="`migrate run --resume` continues where this run stopped")


def _run_load(settings: Settings, p, s, *, resume: bool, progress: Progress, pool=None):
    stop = StopFlag()
    ctx = RunContext(settings, p, s, progress, stop)

    async def main():
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_signal():
            if stop.requested:  # second signal: stop now
                task.cancel()
            stop.requested = True
            progress.event("signal", action="finishing the current batch, then exit 75")

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            from migrator.load import run as load  # here: `files`, `status` ... need none of the load's imports

            return await load.execute(ctx, resume=resume, pool=pool)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        raise load_interrupted(None) from None
    finally:
        progress.close()


NEXT_SNAPSHOT = "snapshot-next"


@contextlib.contextmanager
def _timed(progress: Progress, name: str):
    """A `catch-up` progress event with the phase's seconds once it is done (where a catch-up's window goes)."""
    t0 = time.monotonic()
    yield
    progress.event("catch-up", phase=name, seconds=round(time.monotonic() - t0, 3))


@_drops_scratch
def catch_up(settings: Settings, *, then_verify: bool = False) -> Outcome:
    """`migrate catch-up`: a new snapshot, and the target brought from the work dir's snapshot to it, writing only
    what changed; exactly once and resumable (an interrupted catch-up continues with the snapshot it took).

    then_verify: once the target holds the new snapshot, its state is pinned (an exported snapshot per database, held
    open) and READY is announced (a progress event `catch-up`/`ready`, a WARNING line, the file WORK_DIR/READY_FILE):
    HridaAI may start on the target now, while the full verify reads the pinned state, so HridaAI's own writes from
    then on are not differences. Exit 3 when verify finds any."""
    from migrator.catchup import run as catchup
    from migrator.targets import postgres as pgt
    from migrator.verify import run as verify_stage

    settings, notes = _target(settings, start=True)
    old = snap.find(settings)
    if old is None:
        raise UsageError("no snapshot in the work dir", detail=str(settings.work_dir),
                         hint="catch-up continues a finished `migrate run`: pass its --work-dir")
    ready = settings.work_dir / READY_FILE
    ready.unlink(missing_ok=True)
    progress = choose(settings.log_format)
    try:
        if old.deferred:  # a catch-up --then-verify ended after READY, before checking the snapshot it promoted
            old = _complete_checks(settings, old)
        with _timed(progress, "snapshot"):
            new = snap.find(settings, name=NEXT_SNAPSHOT)
            # a catch-up cut off, and a source it read in place written since
            if new is not None and not all(map(snap.unchanged_source, new.linked.values())):
                if asyncio.run(_applied_any(settings, new)):  # its writes were of what it read: no way on
                    snap.check_linked_sources(new.linked)
                new = None  # nothing written from it: a new snapshot, of the source as it is now
            new = new or snap.take(settings, name=NEXT_SNAPSHOT, previous=old, defer_checks=then_verify, sync=False,
                                   link=then_verify)
        linked = dict(new.linked)  # --then-verify: read in place, copied in after READY (_complete_checks)
        syncing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fsync")
        pending = syncing.submit(snap.sync, new) if not then_verify else None  # beside the delta and the writes

        def durable():  # before the target records the snapshot: on disk (--then-verify: its fsync comes after
            if pending is not None:  # READY), and no linked source written while it was read
                pending.result()
            snap.check_linked_sources(linked)

        with _timed(progress, "plan"):  # its vector part comes beside the delta (catchup.execute)
            p = asyncio.run(plan_stage.build(settings, new, scan=False, vectors=False))
        try:
            report = asyncio.run(catchup.execute(RunContext(settings, p, new, progress), old,
                                                 statistics=not then_verify, durable=durable,
                                                 plan_vectors=True,
                                                 unchanged=lambda: snap.check_linked_sources(linked)))
        finally:
            syncing.shutdown(wait=True)
        with _timed(progress, "promote"):
            new = snap.promote(settings, NEXT_SNAPSHOT, set_aside=then_verify)
        _save_report(settings, "catch-up.json", report.asdict())
        if not then_verify:
            return Outcome(report, notes)

        async def pinned_verify():
            urls = [settings.target_url] + ([settings.pgvector_url] if p.vectors and settings.pgvector_url else [])
            conn = await pgt.connect(settings.target_url)  # before the pin: ANALYZE writes statistics
            try:
                async with pgt.pinned(urls):
                    ready.write_text(new.snapshot_id + "\n")
                    progress.event("catch-up", phase="ready", snapshot=new.snapshot_id)
                    log.warning("READY: the target holds snapshot %s; HridaAI may start on it now (verify goes on "
                                "reading the state catch-up left)", new.snapshot_id)
                    await catchup.analyze(conn, p.schema, report.changed_tables)  # not part of the window
                    await asyncio.to_thread(_complete_checks, settings, new, after_ready=True)  # in place; fsync
                    await asyncio.to_thread(snap.sweep, settings)  # the previous snapshot, set aside by promote
                    # the catch-up's plan (same snapshot id and content; paths are the snapshot's, promoted)
                    return await verify_stage.check(RunContext(settings, p, new), sample_size=settings.sample_size)
            finally:
                await pgt.close_quietly(conn)

        with _timed(progress, "verify"):
            checked = asyncio.run(pinned_verify())
    finally:
        progress.close()
    _save_report(settings, "verify.json", checked.asdict())
    both = Outcome(_Both(report, checked), notes)
    if not checked.ok:
        exc = VerificationFailed(f"verify found {len(checked.problems)} differences in the state catch-up left",
                                 detail="; ".join(checked.problems[:10]),
                                 hint=f"see {settings.work_dir}/reports/verify.json")
        exc.outcome = both
        raise exc
    return both


READY_FILE = "catch-up-ready"


async def _applied_any(settings: Settings, s: snap.Snapshot) -> bool:
    """Whether a catch-up to snapshot `s` committed any step on the target."""
    from migrator.catchup.run import PREFIX
    from migrator.targets import postgres as pgt

    conn = await pgt.connect(settings.target_url)
    try:
        return any(n.startswith(f"{PREFIX}{s.snapshot_id}:") for n in await ledger.steps(conn))
    finally:
        await pgt.close_quietly(conn)


def _complete_checks(settings: Settings, s: snap.Snapshot, *, after_ready: bool = False) -> snap.Snapshot:
    """The quick_check and SHA-256 a catch-up --then-verify leaves until after READY (snap.complete_checks)."""
    try:
        return snap.complete_checks(settings, s)
    except PreflightError as exc:
        if not after_ready:
            raise
        raise PreflightError(f"the snapshot catch-up applied does not pass its checks: {exc.message}",
                             detail=exc.detail,
                             hint="HridaAI may already run on the target caught up from it: stop it, go back to "
                                  "the SQLite install (the source is untouched), repair it (sqlite3 .recover) and "
                                  "migrate again into an empty target") from exc


@dataclass
class _Both:
    """catch-up --then-verify: the catch-up's report, then verify's."""

    catch_up: object
    verify: object

    def asdict(self) -> dict:
        """JSON form."""
        return {"catch_up": self.catch_up.asdict(), "verify": self.verify.asdict()}

    def asstr(self) -> str:
        """For people."""
        return self.catch_up.asstr() + "\n" + self.verify.asstr()


def files(settings: Settings, *, verify_only: bool = False, missing: str = "fail", workers: int = 8) -> Outcome:
    """`migrate files`: uploads to the object store HridaAI's STORAGE_PROVIDER names, `file.path` rewritten; with
    `verify_only`, every moved upload read back and compared (exit 3 on a difference)."""
    from migrator.files import config as files_config, run as files_run, stores, verify as files_verify

    cfg = files_config.from_env()  # exit 2 before anything else when the storage settings are not usable
    settings, notes = _target(settings, start=True)
    s = snap.find(settings)
    if s is None:
        raise UsageError("no snapshot in the work dir", detail=str(settings.work_dir),
                         hint="`migrate files` follows `migrate run` (or catch-up): pass its --work-dir")
    p = asyncio.run(plan_stage.build(settings, s, scan=False, vectors=False))  # uploads need no Chroma store read
    store = stores.open_store(cfg)
    progress = choose(settings.log_format)
    try:
        ctx = RunContext(settings, p, s, progress)
        if verify_only:
            report = asyncio.run(files_verify.check(ctx, store, workers=workers))
        else:
            report = asyncio.run(files_run.execute(ctx, store, missing=missing, workers=workers))
    finally:
        progress.close()
    _save_report(settings, "files-verify.json" if verify_only else "files.json", report.asdict())
    if verify_only and not report.ok:
        exc = VerificationFailed(f"{len(report.problems)} uploads differ from their source files",
                                 detail="; ".join(report.problems[:10]),
                                 hint=f"see {settings.work_dir}/reports/files-verify.json; `migrate files` moves "
                                      "what is missing again")
        exc.outcome = Outcome(report, notes)
        raise exc
    return Outcome(report, notes)


@_drops_scratch
def verify(settings: Settings) -> Outcome:
    """`migrate verify`: exit 0 only when everything matches (3 otherwise)."""
    from migrator.verify import run as verify_stage

    settings, notes = _target(settings, start=True)
    s = snap.find(settings)
    if s is None:
        raise UsageError("no snapshot in the work dir", detail=str(settings.work_dir),
                         hint="verify compares the target with the snapshot `migrate run` used: pass its --work-dir")
    s = _complete_checks(settings, s)  # a catch-up --then-verify that ended before checking its snapshot
    p = asyncio.run(plan_stage.build(settings, s, scan=False))
    report = asyncio.run(verify_stage.check(RunContext(settings, p, s), sample_size=settings.sample_size))
    _save_report(settings, "verify.json", report.asdict())
    if not report.ok:
        exc = VerificationFailed(f"verify found {len(report.problems)} differences",
                                 detail="; ".join(report.problems[:10]),
                                 hint=f"see {settings.work_dir}/reports/verify.json")
        exc.outcome = Outcome(report, notes)
        raise exc
    return Outcome(report, notes)


@_drops_scratch
def tune_search(settings: Settings, *, target_recall: float, sample: int, seed: int, dry_run: bool,
                reset: bool, when_not_owner: str = "fail") -> Outcome:
    """`migrate tune-search`: measure HridaAI's search recall and set the smallest ivfflat.probes / hnsw.ef_search
    reaching `target_recall` as the pgvector database's default (`--dry-run` measures only, `--reset` undoes it).

    Raises PreflightError (exit 4) when this user may not alter the database (not its owner)."""
    from migrator.vectors import plan as vectors_plan, tune

    settings, notes = _target(settings, start=True)
    result = asyncio.run(tune.tune(settings, vectors_plan.spec_of(settings), target_recall=target_recall,
                                   sample=sample, seed=seed, dry_run=dry_run, reset=reset,
                                   when_not_owner=when_not_owner))
    return Outcome(result, notes)


def status(settings: Settings) -> Outcome:
    """`migrate status`: per-unit progress read from the ledger (works while a run is going on)."""
    settings, notes = _target(settings, start=False)
    if settings.target_url is None:
        settings, notes = _target(settings, start=True)
    return Outcome(asyncio.run(_status(settings)), notes)


async def _status(settings: Settings) -> dict:
    from migrator.targets import postgres as pgt

    conn = await pgt.connect(settings.target_url, readonly=True)
    try:
        run = await ledger.current_run(conn)
        if run is None:
            return {"run": None, "units": []}
        prog = await ledger.progress(conn)
        units = []
        for u in await ledger.units(conn):
            p = prog.get(u["unit"])
            units.append({"unit": u["unit"], "kind": u["kind"], "done_rows": (p.rows + p.quarantined) if p else 0,
                          "total_rows": u["total_rows"], "done": u["done"],
                          "last_batch_at": p.last_commit.isoformat() if p and p.last_commit else None})
        steps = await ledger.steps(conn)
        return {"run": {k: str(v) for k, v in run.items()}, "phase": _phase(run, steps), "units": units,
                "steps": {k: v for k, v in steps.items() if not k.startswith("catchup:")}}
    finally:
        await conn.close()


def _phase(run: dict, steps: dict[str, str]) -> dict:
    """Where the target is: loading, loaded, or caught up (and what the last catch-up changed), or a catch-up under
    way (its steps so far)."""
    snapshots: dict[str, list[str]] = {}
    for name in steps:
        if name.startswith("catchup:"):
            snapshots.setdefault(name.split(":")[1], []).append(name)
    holds = run["snapshot_id"]
    under_way = sorted(sid for sid, names in snapshots.items() if f"catchup:{sid}:done" not in names)
    if run["state"] != "done":
        phase = {"phase": "loading", "snapshot": holds}
    elif holds in snapshots:
        phase = {"phase": "caught up", "snapshot": holds, "catch_ups": len(snapshots) - len(under_way),
                 "last_catch_up": _totals(steps, snapshots[holds])}
    else:
        phase = {"phase": "loaded", "snapshot": holds}
    if under_way:
        phase["catch_up_under_way"] = {sid: _totals(steps, snapshots[sid]) for sid in under_way}
    return phase


def _totals(steps: dict[str, str], names: list[str]) -> dict:
    """Rows and chunks a catch-up's committed steps wrote, removed and quarantined."""
    out = {"steps": len(names), "written": 0, "deleted": 0, "quarantined": 0}
    for name in names:
        detail = json.loads(steps[name]) if steps[name] else {}
        out["written"] += detail.get("written", 0)
        out["deleted"] += detail.get("deleted", 0)
        out["quarantined"] += detail.get("quarantined", 0)
    return out


async def _capture(url: str, schema: str):
    from migrator.catalog import capture as schema_capture
    from migrator.targets import postgres as pgt

    conn = await pgt.connect(url, readonly=True)
    try:
        return await schema_capture.capture(conn, schema=schema)
    finally:
        await conn.close()


def schema_capture(settings: Settings, *, out_dir: Path) -> Outcome:
    """`migrate schema capture`: record the catalog entry of a database HridaAI's own migrations created."""
    if settings.target_url is None:
        raise UsageError("schema capture needs --target (or DATABASE_URL) of a database HridaAI created")
    cat = asyncio.run(_capture(settings.target_url, settings.database_schema or "public"))
    path = catalog.save(cat, out_dir)
    return Outcome({"revision": cat.revision, "tables": len(cat.tables), "written": str(path)}, [])


def _target(settings: Settings, *, start: bool) -> tuple[Settings, list[str]]:
    """With no DATABASE_URL / --target, use (and with start=True, start) the embedded PostgreSQL."""
    if settings.target_url is not None:
        return settings, []
    if not start:
        return settings, []
    url, hint = embedded.start(settings.work_dir)
    notes = ["NOTE: no DATABASE_URL or --target given: using the EMBEDDED PostgreSQL + pgvector under "
             f"{settings.work_dir}/{embedded.DIRNAME} (a trial target, not your production database)",
             f"connect with: {hint}"]
    return settings.with_target(url), notes


def _save_report(settings: Settings, name: str, doc: dict) -> Path:
    directory = workdir.ensure_private_dir(settings.work_dir / REPORTS)
    return workdir.write_json(directory / name, doc, what=f"the report {name}")


def _export_reports(settings: Settings) -> None:
    """quarantine.jsonl and fixups.jsonl in the work dir, exported from the ledger (exactly what was committed)."""

    async def fetch():
        from migrator.targets import postgres as pgt

        conn = await pgt.connect(settings.target_url, readonly=True)
        try:
            return await ledger.quarantined(conn), await ledger.fixups(conn)
        finally:
            await conn.close()

    quarantine, fixups = asyncio.run(fetch())
    directory = workdir.ensure_private_dir(settings.work_dir / REPORTS)
    for name, rows in (("quarantine.jsonl", quarantine), ("fixups.jsonl", fixups)):
        workdir.write_private(directory / name, (json.dumps(r, ensure_ascii=True, default=str) + "\n" for r in rows),
                              what=f"the report {name}")

