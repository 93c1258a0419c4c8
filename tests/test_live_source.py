"""A source HridaAI is still writing (issue 15, phase 1): the snapshot is of one committed moment, or refused as
transient, never a torn copy reported as a damaged database.

The writer is a real SQLite connection in a transaction, journal mode DELETE (the fixture's), whose dirty pages
have spilled into hridaai.db with the originals in hridaai.db-journal: the state in which a reader that ignores locks
(immutable=1) copies a torn file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SMALL, run_cli

WRITER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA cache_size = 5")  # a few pages: the transaction's pages spill into the file
db.execute("BEGIN")
db.execute("CREATE TABLE zz_writer (x BLOB)")
for _ in range(400):
    db.execute("INSERT INTO zz_writer VALUES (randomblob(4000))")
print("holding", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
print("committed", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def writer(tmp_path):
    """A copy of the small fixture with a writer holding an open, spilled transaction on its hridaai.db."""
    data = tmp_path / "data"
    shutil.copytree(SMALL, data)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(data / "hridaai.db")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    journal = data / "hridaai.db-journal"
    assert journal.exists() and journal.stat().st_size > 0  # pages spilled: the file itself is mid-transaction
    yield data, proc
    proc.kill()
    proc.wait()


def _snapshot(data: Path, work: Path, wait: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "migrator", "snapshot", "--data-dir", str(data), "--work-dir",
                             str(work), "--log-format", "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "HRIDAAI_MIGRATE_SOURCE_WAIT": wait}, **kw)


def test_a_writer_holding_the_lock_is_waited_for_then_refused_as_transient(writer, tmp_path):
    data, _ = writer
    t0 = time.monotonic()
    proc = _snapshot(data, tmp_path / "w", "3")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, out + err
    assert time.monotonic() - t0 >= 3
    assert "a writer holds hridaai.db: is HridaAI still running?" in err and "Traceback" not in err
    assert "integrity" not in err and "repair" not in err  # never "your healthy database is corrupt"
    assert not (tmp_path / "w" / "snapshot").exists()


def test_a_writer_that_commits_while_waited_for_gives_the_committed_state(writer, tmp_path):
    data, holder = writer
    proc = _snapshot(data, tmp_path / "w", "120")
    time.sleep(2)
    assert proc.poll() is None  # waiting for the lock, not reading through it
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "committed"
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    manifest = json.loads((tmp_path / "w" / "snapshot" / "manifest.json").read_text())
    assert manifest["row_counts"]["zz_writer"] == 400  # the transaction as committed, whole


def test_a_hridaai_db_that_is_a_directory_is_named_as_the_problem(tmp_path):
    data = tmp_path / "data"
    (data / "hridaai.db").mkdir(parents=True)
    proc = run_cli("snapshot", "--data-dir", str(data), "--work-dir", str(tmp_path / "w"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{data / 'hridaai.db'} is a directory, not HridaAI's SQLite database" in proc.stderr
    assert "free space" not in proc.stderr


def test_chroma_segment_files_changing_during_the_copy_are_copied_again(tmp_path, monkeypatch):
    """A persist of chromadb's between the folders' copy and chroma.sqlite3's: the copy is taken again; a store
    that never holds still is refused as transient."""
    from migrator import snapshot
    from migrator.errors import TransientError
    from migrator.sources import live

    store = tmp_path / "vector_db"
    shutil.copytree(SMALL / "vector_db", store)
    segment = next(p for p in store.iterdir() if p.is_dir())
    real_backup, calls = live.backup, []

    def persisting_once(src, dest, *, key):
        calls.append(dest)
        if len(calls) == 1:
            (segment / "header.bin").write_bytes((segment / "header.bin").read_bytes())  # rewritten, as a persist
        return real_backup(src, dest, key=key)

    monkeypatch.setattr(live, "backup", persisting_once)
    assert snapshot._copy_vector_store(store, tmp_path / "copy") == {"path": str(store)}
    assert len(calls) == 2
    assert (tmp_path / "copy" / segment.name / "header.bin").read_bytes() == (segment / "header.bin").read_bytes()

    def persisting_always(src, dest, *, key):
        (segment / "header.bin").write_bytes((segment / "header.bin").read_bytes())
        return real_backup(src, dest, key=key)

    monkeypatch.setattr(live, "backup", persisting_always)
    with pytest.raises(TransientError, match="kept changing"):
        snapshot._copy_vector_store(store, tmp_path / "copy2")
