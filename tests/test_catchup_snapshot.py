"""Issue 15, the window: the snapshot `catch-up --then-verify` takes. Its SQLite files are named by the pages that
differ from the previous snapshot (not hashed whole), and a source nothing writes is read in place (linked) while
its copy is made beside the work: the copy must prove it holds what was read, and a source written meanwhile is
refused (exit 75), never copied as if it were the one read."""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest

from conftest import SMALL, file_digest, tree_digest
from migrator import settings as settings_mod, snapshot as snap
from migrator.errors import TransientError


def _dirs(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SMALL, data)
    cfg = settings_mod.build({"data_dir": str(data), "work_dir": str(tmp_path / "w"),
                              "target": "postgresql://nobody@localhost/none"}, {})
    return data, cfg


def _edit(data, title="edited"):
    db = sqlite3.connect(data / "hridaai.db")
    db.execute("UPDATE chat SET title = ? WHERE id = (SELECT min(id) FROM chat)", (title,))
    db.commit()
    db.close()


def test_a_linked_snapshot_is_read_in_place_then_copied_in_as_it_was_read(tmp_path):
    data, cfg = _dirs(tmp_path)
    previous = snap.take(cfg)
    _edit(data)
    modes = {p: p.stat().st_mode for p in (data / "hridaai.db", data / "vector_db" / "chroma.sqlite3")}
    new = snap.take(cfg, name="snapshot-next", previous=previous, defer_checks=True, sync=False, link=True)
    db = tmp_path / "w" / "snapshot-next" / "hridaai.db"
    assert db.is_symlink() and os.path.samefile(db, data / "hridaai.db")
    assert set(new.linked) == {"hridaai.db", "vector_db/chroma.sqlite3"}
    assert {p: p.stat().st_mode for p in modes} == modes  # the source's modes are not ours to change
    entry = next(f for f in new.files if f["path"] == "hridaai.db")
    assert entry["derived"]["from"] == previous.snapshot_id and entry["derived"]["pages"] > 0
    unchanged = next(f for f in new.files if f["path"] == "vector_db/chroma.sqlite3")
    assert snap.identity(unchanged) == snap.identity(next(f for f in previous.files if f["path"] == unchanged["path"]))

    before = tree_digest(data)
    snap.materialize(new, previous)
    assert not db.is_symlink() and file_digest(db) == file_digest(data / "hridaai.db")
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    assert snap.find(cfg, name="snapshot-next").linked == {}
    assert tree_digest(data) == before  # nothing of the source written


def test_a_source_written_after_it_was_linked_is_refused(tmp_path):
    data, cfg = _dirs(tmp_path)
    previous = snap.take(cfg)
    _edit(data)
    new = snap.take(cfg, name="snapshot-next", previous=previous, defer_checks=True, sync=False, link=True)
    linked = dict(new.linked)
    snap.check_linked_sources(linked)  # nothing written yet
    _edit(data, "written by HridaAI while catch-up ran")
    with pytest.raises(TransientError, match="changed while catch-up read it"):
        snap.check_linked_sources(linked)
    with pytest.raises(TransientError, match="is HridaAI still running"):
        snap.materialize(new, previous)
    assert (tmp_path / "w" / "snapshot-next" / "hridaai.db").is_symlink()  # not copied as if it were the one read
    assert not list((tmp_path / "w" / "snapshot-next").glob(".*.copy.tmp"))


def test_a_source_being_written_is_copied_not_linked(tmp_path):
    data, cfg = _dirs(tmp_path)
    previous = snap.take(cfg)
    _edit(data)
    (data / "hridaai.db-journal").write_bytes(b"")  # a journal beside it (empty: not hot, the copy may proceed)
    new = snap.take(cfg, name="snapshot-next", previous=previous, defer_checks=True, sync=False, link=True)
    assert "hridaai.db" not in new.linked
    assert not (tmp_path / "w" / "snapshot-next" / "hridaai.db").is_symlink()


def test_a_snapshot_without_previous_or_link_is_copied_and_hashed_whole(tmp_path):
    data, cfg = _dirs(tmp_path)
    first = snap.take(cfg)
    assert first.linked == {} and all("sha256" in f and "derived" not in f for f in first.files)
    assert next(f for f in first.files if f["path"] == "hridaai.db")["sha256"] == file_digest(
        tmp_path / "w" / "snapshot" / "hridaai.db")[1]
