"""The thin click layer: parse flags, call one function in commands, print, map errors to exit codes."""

from __future__ import annotations

import json
import logging
import os
import sys

import click

from migrator import access, commands, settings as settings_mod
from migrator.errors import EXIT_FATAL, EXIT_USAGE, WRITE_ERRNOS, MigrationError, UsageError, work_dir_error


def _common(f):
    options = [
        click.option("--data-dir", type=click.Path(file_okay=False, readable=False),  # unreadable: our own error
                     help="HridaAI's DATA_DIR (holds hridaai.db)."),
        click.option("--work-dir", type=click.Path(file_okay=False),
                     help="Snapshot, reports, embedded server. Default ./hridaai-migrate-work."),
        click.option("--target", help="PostgreSQL URL (default DATABASE_URL; none = embedded PostgreSQL)."),
        click.option("--pgvector-target", help="pgvector database URL (default PGVECTOR_DB_URL, else the target)."),
        click.option("--chroma-path", type=click.Path(file_okay=False, readable=False),
                     help="Chroma dir (CHROMA_DATA_PATH)."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
        click.option("--log-format", type=click.Choice(["auto", "text", "json", "none"]), default=None,
                     help="Progress/log format (default: json when stderr is not a terminal)."),
        click.option("--batch-rows", type=int, help="Max rows per batch (default 10000)."),
        click.option("--batch-bytes", type=int, help="Max bytes per batch (default 8 MiB)."),
        click.option("--policy", "policies", multiple=True, metavar="NAME=ACTION",
                     help="Override a conversion policy (see `migrate policies`)."),
        click.option("--orphans", type=click.Choice(["quarantine", "fail"]), default=None,
                     help="Rows pointing at a missing parent: quarantine them (default) or fail."),
        click.option("--jobs", type=int, help="Parallel workers: load processes, collections, verify processes "
                                              "(default: min(2, cores))."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _settings(kw: dict) -> settings_mod.Settings:
    policies = {}
    for item in kw.pop("policies", ()) or ():
        name, sep, action = item.partition("=")
        if not sep:
            raise UsageError(f"--policy expects NAME=ACTION, got {item!r}", hint=settings_mod.POLICY_HINT)
        policies[name.strip()] = action.strip()
    kw["policies"] = policies
    return settings_mod.build(kw)


def _emit(outcome: commands.Outcome, as_json: bool) -> None:
    for note in outcome.notes:
        click.echo(note, err=True)
    result = outcome.result
    if as_json:
        doc = result.asdict() if hasattr(result, "asdict") else result
        click.echo(json.dumps(doc, indent=1, ensure_ascii=False, default=str))
    else:
        click.echo(result.asstr() if hasattr(result, "asstr") else json.dumps(result, indent=1, default=str))


def _invoke(fn, kw: dict, **extra) -> None:
    as_json = kw.pop("as_json", False)
    kw.pop("log_format_set", None)
    os.umask(0o077)  # every file the tool creates (snapshot, scratch copies, reports) is private to its user
    settings = None
    try:
        settings = _settings(kw)
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        _emit(fn(settings, **extra), as_json)
    except MigrationError as exc:
        if getattr(exc, "outcome", None) is not None:  # refused plans and failed verifies still print the report
            _emit(exc.outcome, as_json)
        click.echo(exc.render(), err=True)
        sys.exit(exc.exit_code)
    except PermissionError as exc:  # an unreadable source (exit 4) or an unwritable work dir, never "a bug"
        err = access.explain(exc, [p for p in (settings.data_dir, settings.vector_store) if p is not None]
                             if settings is not None else [])
        click.echo(err.render(), err=True)
        sys.exit(err.exit_code)
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            _unexpected(exc)
        err = work_dir_error(exc, what="into the work directory")  # disk full ...: say so, no traceback
        click.echo(err.render(), err=True)
        sys.exit(err.exit_code)
    except ValueError as exc:  # operator input a library function refused
        click.echo(f"ERROR: {exc}\nHINT: check the values given (`migrate {click.get_current_context().info_name} "
                   "--help`)", err=True)
        sys.exit(EXIT_USAGE)
    except Exception as exc:
        _unexpected(exc)


def _unexpected(exc: Exception) -> None:
    """A bug: say so plainly; the traceback goes to the log, not as the only message."""
    logging.getLogger("migrator").debug("unexpected error", exc_info=True)
    click.echo(f"ERROR: unexpected {exc.__class__.__name__}: {settings_mod.mask_dsn(str(exc))}\n"
               "HINT: this is a bug in hridaai-migrate; rerun with --resume after reporting it", err=True)
    sys.exit(EXIT_FATAL)


@click.group()
@click.version_option(package_name="hridaai-migrate")
def main() -> None:
    """Move a HridaAI installation from SQLite + Chroma to PostgreSQL + pgvector, provably."""


@main.command()
@_common
def snapshot(**kw) -> None:
    """Copy hridaai.db (and vector_db/) consistently into the work dir, with a manifest."""
    _invoke(commands.snapshot, kw)


@main.command()
@_common
@click.option("--force-clear", is_flag=True, help="Plan as `run --force-clear` would (existing mode with data).")
def plan(force_clear: bool, **kw) -> None:
    """Inspect snapshot and target (read-only on both); exit 4 when an error-level check fails."""
    kw["force_clear"] = force_clear or None
    _invoke(commands.plan, kw)


@main.command()
@_common
@click.option("--resume", is_flag=True, help="Continue after the last committed batch of the recorded run.")
@click.option("--force-clear", is_flag=True, help="Existing mode: delete what HridaAI already stored in the target.")
def run(resume: bool, force_clear: bool, **kw) -> None:
    """Load every table (and collection) in committed, resumable batches."""
    kw["force_clear"] = force_clear or None
    _invoke(commands.run, kw, resume=resume)


@main.command("catch-up")
@_common
@click.option("--then-verify", is_flag=True,
              help="Once the target holds the new snapshot, pin its state, announce READY (HridaAI may start), and "
                   "verify the pinned state; exit 3 on a difference.")
def catch_up(then_verify: bool, **kw) -> None:
    """Bring the target to a new snapshot, writing only what changed since the last run (or catch-up)."""
    _invoke(commands.catch_up, kw, then_verify=then_verify)


@main.command()
@_common
@click.option("--sample-size", type=int, help="Rows compared field by field (default 200).")
def verify(sample_size: int | None, **kw) -> None:
    """Recompute counts and checksums on both sides; exit 0 only when all match, 3 otherwise."""
    kw["sample_size"] = sample_size
    _invoke(commands.verify, kw)


@main.command()
@_common
@click.option("--verify", "verify_only", is_flag=True,
              help="Read every moved upload back and compare it with its source file; exit 3 on a difference.")
@click.option("--missing", type=click.Choice(["fail", "report"]), default="fail", show_default=True,
              help="missing_upload policy: a row whose upload is not under uploads/ stops the command before "
                   "anything is written, or is listed in the report and keeps its path.")
@click.option("--upload-workers", type=int, default=8, show_default=True, help="Uploads (and reads back) at once.")
@click.option("--resume", is_flag=True, help="Continue an interrupted `files` (what it always does: each file's "
                                             "rewrite is in the ledger, stored objects are not sent again).")
def files(verify_only: bool, missing: str, upload_workers: int, resume: bool, **kw) -> None:
    """Move uploads/ to the object store STORAGE_PROVIDER names (S3_* settings, as HridaAI reads them) and rewrite
    file.path to the URIs HridaAI records; resumable: run it again after an interruption."""
    _invoke(commands.files, kw, verify_only=verify_only, missing=missing, workers=max(1, upload_workers))


@main.command("tune-search")
@_common
@click.option("--target-recall", type=float, default=0.95, show_default=True,
              help="recall@10 HridaAI's searches should reach.")
@click.option("--sample", type=int, default=200, show_default=True, help="Stored chunks used as queries.")
@click.option("--seed", type=int, default=1, show_default=True, help="Which chunks are drawn.")
@click.option("--dry-run", is_flag=True, help="Measure only; change nothing.")
@click.option("--reset", is_flag=True, help="Undo: the server's default probes / ef_search again.")
@click.option("--when-not-owner", type=click.Choice(["fail", "print"]), default="fail", show_default=True,
              help="If this role may not change the database's defaults: exit 4, or print the statement for its "
                   "owner and exit 0 (the Job's step).")
def tune_search(target_recall: float, sample: int, seed: int, dry_run: bool, reset: bool, when_not_owner: str,
                **kw) -> None:
    """Set the smallest ivfflat.probes (hnsw.ef_search) reaching --target-recall as the database's default."""
    _invoke(commands.tune_search, kw, target_recall=target_recall, sample=sample, seed=seed, dry_run=dry_run,
            reset=reset, when_not_owner=when_not_owner)


@main.command()
@_common
def status(**kw) -> None:
    """Per table/collection progress from the target's ledger (also while a run is going on)."""
    _invoke(commands.status, kw)


@main.command()
def policies() -> None:
    """List the conversion policies, their default and allowed actions."""
    from migrator.convert.policies import POLICIES

    for name, (default, allowed, about) in POLICIES.items():
        click.echo(f"{name:<22} default {default:<9} allowed {'|'.join(allowed):<22} {about}")


@main.group()
def schema() -> None:
    """The schema catalog (HridaAI's PostgreSQL schema per alembic revision)."""


@schema.command("capture")
@_common
@click.option("--out-dir", type=click.Path(file_okay=False), default="schemas", show_default=True)
def schema_capture(out_dir: str, **kw) -> None:
    """Record the schema of a database HridaAI's own migrations created as <revision>.json."""
    from pathlib import Path

    _invoke(commands.schema_capture, kw, out_dir=Path(out_dir))


@schema.command("list")
def schema_list() -> None:
    """Alembic revisions the catalog knows."""
    from migrator.catalog.schema import known_revisions

    for rev in known_revisions():
        click.echo(rev)


@main.command("config")
@_common
def config(**kw) -> None:
    """Print the resolved settings (flags > HridaAI's env > defaults), where each came from; passwords masked."""
    from migrator import config_report

    _invoke(lambda settings: commands.Outcome(config_report.report(settings), []), kw)
