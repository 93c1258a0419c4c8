"""`migrate catch-up` (issue 15, phase 2, tables): after `run`, the source changes the way HridaAI changes it; the
catch-up writes only what changed, keeps the load's quarantine rules, is exactly once when killed between steps, and
refuses what it must refuse before writing anything. Verify then compares the target with the new snapshot."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys

from conftest import MIGRATE, ROOT, SMALL, file_digest, query, run_cli, stopped_at_failpoint
from migrator import snapshot as snap


def _installed(tmp_path, target_url) -> tuple:
    data = tmp_path / "data"
    shutil.copytree(SMALL, data)
    common = ["--data-dir", str(data), "--work-dir", str(tmp_path / "w"), "--target", target_url,
              "--log-format", "none"]
    db = sqlite3.connect(data / "hridaai.db")
    cols = [r[1] for r in db.execute("PRAGMA table_info(chat_message)")]
    first = db.execute("SELECT * FROM chat_message LIMIT 1").fetchone()
    orphan = dict(zip(cols, first), id="orphan-message", chat_id="chat-that-comes-later")
    db.execute(f"INSERT INTO chat_message ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
               [orphan[c] for c in cols])  # quarantined by the run: its chat does not exist (yet)
    db.commit()
    db.close()
    run = run_cli("run", *common)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert query(target_url, "SELECT count(*) FROM hridaai_migrate.quarantine WHERE key = $1",
                 '["orphan-message"]')[0][0] == 1
    return data, common


def _change(data) -> dict:
    """Edit a chat, delete one (its messages left behind, as a raw DELETE leaves them), add one, and add the chat the
    quarantined message was waiting for."""
    db = sqlite3.connect(data / "hridaai.db")
    ids = [r[0] for r in db.execute("SELECT id FROM chat ORDER BY id")]
    rest = ", ".join(f'"{c}"' for c in (r[1] for r in db.execute("PRAGMA table_info(chat)")) if c != "id")
    db.execute("UPDATE chat SET title = title || ' (edited)' WHERE id = ?", (ids[0],))
    left = db.execute("SELECT count(*) FROM chat_message WHERE chat_id = ?", (ids[1],)).fetchone()[0]
    db.execute("DELETE FROM chat WHERE id = ?", (ids[1],))
    db.execute(f"INSERT INTO chat (id, {rest}) SELECT 'aa-new', {rest} FROM chat WHERE id = ?", (ids[3],))
    db.execute(f"INSERT INTO chat (id, {rest}) SELECT 'chat-that-comes-later', {rest} FROM chat WHERE id = ?",
               (ids[3],))
    db.commit()
    db.close()
    return {"edited": ids[0], "deleted": ids[1], "orphaned": left}


def test_catch_up_writes_what_changed_and_verify_is_clean(tmp_path, target_url):
    data, common = _installed(tmp_path, target_url)
    changed = _change(data)
    out = run_cli("catch-up", *common, "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["tables"]["chat"] == {"inserted": 2, "updated": 1, "deleted": 1, "quarantined": 0}
    # the deleted chat's messages are orphans now (a fresh load of the new data quarantines them too)
    assert report["tables"]["chat_message"]["quarantined"] == changed["orphaned"]
    title = query(target_url, "SELECT title FROM chat WHERE id = $1", changed["edited"])[0][0]
    assert title.endswith(" (edited)")
    assert query(target_url, "SELECT count(*) FROM chat_message WHERE id = 'orphan-message'")[0][0] == 1  # loaded now
    assert query(target_url, "SELECT count(*) FROM hridaai_migrate.quarantine WHERE key = $1",
                 '["orphan-message"]')[0][0] == 0
    verify = run_cli("verify", *common)
    assert verify.returncode == 0, verify.stdout[-3000:]
    status = json.loads(run_cli("status", *common, "--json").stdout)
    phase = status["phase"]
    assert phase["phase"] == "caught up" and phase["snapshot"] == report["to_snapshot"] and phase["catch_ups"] == 1
    assert phase["last_catch_up"]["written"] >= 3 and phase["last_catch_up"]["deleted"] >= 1
    assert not any(name.startswith("catchup:") for name in status["steps"])
    again = run_cli("catch-up", *common, "--json")  # nothing changed since: nothing written
    assert again.returncode == 0 and not any(any(t.values()) for t in json.loads(again.stdout)["tables"].values())


_CHROMA_CHANGES = """
import sys, numpy as np, chromadb
from chromadb.config import Settings
client = chromadb.PersistentClient(path=sys.argv[1], settings=Settings(anonymized_telemetry=False))
rng = np.random.default_rng(5)
names = sorted(c.name for c in client.list_collections())
files = [n for n in names if n.startswith("file-")]
memories = [n for n in names if n.startswith("user-memory-")]
one = client.get_collection(files[0], embedding_function=None).get(limit=1, include=["embeddings"])
dim = len(one["embeddings"][0])
client.delete_collection(files[0])  # HridaAI deletes a file's collection with the file
client.create_collection("file-uploaded-later", metadata={"hnsw:space": "cosine"}, embedding_function=None).add(
    ids=["later-0", "later-1", "later-2"], embeddings=rng.standard_normal((3, dim)).astype(np.float32),
    documents=["a", "b", "c"], metadatas=[{"source": "later.pdf", "start_index": i} for i in range(3)])
memory = client.get_collection(memories[0], embedding_function=None)
memory.upsert(ids=["new-memory"], embeddings=rng.standard_normal((1, dim)).astype(np.float32),
              documents=["likes tea"], metadatas=[{"created_at": 1, "updated_at": 1}])
some = client.get_collection(files[1], embedding_function=None)
first = some.get(limit=2)["ids"]
some.delete(ids=first[:1])
some.update(ids=first[1:], embeddings=rng.standard_normal((1, dim)).astype(np.float32))
print(files[0], files[1], memories[0])
"""


def test_catch_up_carries_the_chroma_store_changes(tmp_path, target_url):
    data, common = _installed(tmp_path, target_url)
    changed = subprocess.run([sys.executable, "-c", _CHROMA_CHANGES, str(data / "vector_db")], check=True,
                             capture_output=True, text=True, timeout=120).stdout.split()
    gone, edited, memory = changed
    out = run_cli("catch-up", *common, "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    v = json.loads(out.stdout)["vectors"]
    assert v["added"] == ["file-uploaded-later"] and v["removed"] == [gone]
    assert v["upserted"] == 3 + 1 + 1 and v["untouched"] > 0  # the new file, the memory, the edited chunk
    assert query(target_url, "SELECT count(*) FROM document_chunk WHERE collection_name = $1", gone)[0][0] == 0
    assert query(target_url, "SELECT count(*) FROM document_chunk WHERE id = 'new-memory' AND collection_name = $1",
                 memory)[0][0] == 1
    verify = run_cli("verify", *common)
    assert verify.returncode == 0, verify.stdout[-3000:]


def test_catch_up_killed_between_steps_then_again_is_exactly_once(tmp_path, target_url):
    data, common = _installed(tmp_path, target_url)
    _change(data)
    json_log = [a if a != "none" else "json" for a in common]
    proc = subprocess.Popen(MIGRATE + ["catch-up", *json_log], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "HRIDAAI_MIGRATE_STOP_AT": "catch-up"})
    assert stopped_at_failpoint(proc, 300), "catch-up ended before its first step committed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps = query(target_url, "SELECT count(*) FROM hridaai_migrate.step WHERE name LIKE 'catchup:%' "
                              "AND detail IS NOT NULL")[0][0]
    assert steps == 1  # one step that wrote rows committed (with its rows), the next ones not
    phase = json.loads(run_cli("status", *common, "--json").stdout)["phase"]
    assert phase["phase"] == "loaded" and list(phase["catch_up_under_way"].values())[0]["steps"] >= 1
    again = run_cli("catch-up", *common)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    verify = run_cli("verify", *common)
    assert verify.returncode == 0, verify.stdout[-3000:]


def test_catch_up_refuses_a_target_written_since_and_another_revision(tmp_path, target_url):
    data, common = _installed(tmp_path, target_url)
    _change(data)
    query(target_url, "INSERT INTO tag (id, name, user_id) VALUES ('hridaai-wrote-this', 'x', 'u')")
    refused = run_cli("catch-up", *common)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "the target was written since it was loaded: tag" in refused.stderr
    assert query(target_url, "SELECT count(*) FROM hridaai_migrate.step WHERE name LIKE 'catchup:%'")[0][0] == 0
    query(target_url, "DELETE FROM tag WHERE id = 'hridaai-wrote-this'")
    db = sqlite3.connect(data / "hridaai.db")
    db.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    db.commit()
    db.close()
    shutil.rmtree(tmp_path / "w" / "snapshot-next", ignore_errors=True)
    upgraded = run_cli("catch-up", *common)
    assert upgraded.returncode == 4 and "HridaAI was upgraded" in upgraded.stderr, upgraded.stderr


def test_then_verify_reads_the_pinned_state_while_hridaai_writes(tmp_path, target_url):
    """`catch-up --then-verify`: READY once the target holds the new snapshot; HridaAI starts and writes; verify,
    reading the pinned state, is clean; a plain verify afterwards sees HridaAI's write."""
    data, common = _installed(tmp_path, target_url)
    changed = _change(data)
    json_log = [a if a != "none" else "json" for a in common]
    proc = subprocess.Popen(MIGRATE + ["catch-up", "--then-verify", *json_log], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "HRIDAAI_MIGRATE_STOP_AT": "ready"})
    assert stopped_at_failpoint(proc, 300), "catch-up --then-verify ended before READY"
    work = tmp_path / "w"
    manifest = json.loads((work / "snapshot" / "manifest.json").read_text())
    assert (work / "catch-up-ready").read_text().strip() == manifest["snapshot_id"]
    db = next(f for f in manifest["files"] if f["path"] == "hridaai.db")
    assert manifest["deferred"] == ["hridaai.db"] and "sha256" not in db  # named by its differing pages until then
    assert db["derived"]["pages"] > 0
    query(target_url, "UPDATE chat SET title = 'written by HridaAI after READY' WHERE id = $1", changed["edited"])
    query(target_url, "DELETE FROM chat_message WHERE id = (SELECT min(id) FROM chat_message)")
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    assert "all match" in out and "READY" in err
    manifest = json.loads((work / "snapshot" / "manifest.json").read_text())
    db = next(f for f in manifest["files"] if f["path"] == "hridaai.db")
    assert manifest["deferred"] == [] and db["sha256"] == file_digest(work / "snapshot" / "hridaai.db")[1]
    plain = run_cli("verify", *common)
    assert plain.returncode == 3 and "chat" in plain.stdout  # what HridaAI wrote is there, unpinned


def _to_ready_then_killed(common: list[str]) -> None:
    json_log = [a if a != "none" else "json" for a in common]  # the failpoint is a progress event's
    proc = subprocess.Popen(MIGRATE + ["catch-up", "--then-verify", *json_log], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "HRIDAAI_MIGRATE_STOP_AT": "ready"})
    assert stopped_at_failpoint(proc, 300), "catch-up --then-verify ended before READY"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _settings(tmp_path, data):
    from migrator import settings as settings_mod
    return settings_mod.build({"data_dir": str(data), "work_dir": str(tmp_path / "w"),
                               "target": "postgresql://nobody@localhost/none"}, {})


def test_checks_left_after_ready_are_done_by_the_next_command(tmp_path, target_url):
    """Killed at READY, the source still read in place, before the promoted snapshot's copy, quick_check and SHA-256:
    `verify` does them first; a copy that is not what catch-up read, or fails SQLite's check, is refused, named."""
    data, common = _installed(tmp_path, target_url)
    _change(data)
    _to_ready_then_killed(common)
    manifest = tmp_path / "w" / "snapshot" / "manifest.json"
    copy = tmp_path / "w" / "snapshot" / "hridaai.db"
    assert json.loads(manifest.read_text())["deferred"] == ["hridaai.db"] and copy.is_symlink()
    done = run_cli("verify", *common)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads(manifest.read_text())["deferred"] == [] and not copy.is_symlink()
    assert file_digest(copy) == file_digest(data / "hridaai.db")

    db = sqlite3.connect(data / "hridaai.db")
    db.execute("UPDATE chat SET title = title || '!'")
    db.commit()
    db.close()
    _to_ready_then_killed(common)
    cfg = _settings(tmp_path, data)
    snap.materialize(snap.find(cfg), snap.find(cfg, name=snap.PROMOTED), sync=False)  # copied in, not yet checked
    assert not copy.is_symlink()
    with open(copy, "r+b") as f:  # damage the copy's b-tree: a page's cell count far beyond its size
        page_size = int.from_bytes(f.read(18)[16:18], "big")
        root = sqlite3.connect(f"file:{copy}?mode=ro&immutable=1", uri=True).execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'chat'").fetchone()[0]
        f.seek((root - 1) * page_size + 3)
        f.write(b"\xff\xff")
    refused = run_cli("verify", *common)  # the pages read, hashed again against the snapshot set aside
    assert refused.returncode == 4 and "not what catch-up read" in refused.stderr, refused.stderr[-2000:]
    shutil.rmtree(tmp_path / "w" / snap.PROMOTED)  # without it: SQLite's quick_check
    refused = run_cli("verify", *common)
    assert refused.returncode == 4 and "integrity check" in refused.stderr, refused.stderr[-2000:]


def test_a_source_written_after_ready_before_its_copy_is_refused(tmp_path, target_url):
    """HridaAI started on the old SQLite file after READY, before catch-up copied what it had read in place: the copy
    cannot be proven, and is not made (exit 75, the file named); nothing is verified against it."""
    data, common = _installed(tmp_path, target_url)
    _change(data)
    _to_ready_then_killed(common)
    db = sqlite3.connect(data / "hridaai.db")
    db.execute("UPDATE chat SET title = 'written after READY'")
    db.commit()
    db.close()
    refused = run_cli("verify", *common)
    assert refused.returncode == 75 and "changed while catch-up read it" in refused.stderr, refused.stderr[-2000:]
    assert (tmp_path / "w" / "snapshot" / "hridaai.db").is_symlink()
    assert "Traceback" not in refused.stderr


def test_catch_up_refuses_a_chroma_store_it_cannot_read(tmp_path, target_url):
    """HridaAI upgraded chromadb in between (its store now at a schema the installed one does not know): catch-up
    refuses before writing anything, instead of leaving the store's changes out."""
    data, common = _installed(tmp_path, target_url)
    _change(data)
    store = sqlite3.connect(data / "vector_db" / "chroma.sqlite3")
    store.execute("INSERT INTO migrations (dir, version, filename, sql, hash) VALUES ('sysdb', 999, "
                  "'00999-future.sqlite.sql', '', '')")
    store.commit()
    store.close()
    before = query(target_url, "SELECT count(*) FROM hridaai_migrate.step")[0][0]
    done = run_cli("catch-up", *common)
    assert done.returncode == 4 and "Chroma store cannot be read" in done.stderr, done.stderr[-2000:]
    assert "newer chromadb" in done.stderr and "Traceback" not in done.stderr
    assert query(target_url, "SELECT count(*) FROM hridaai_migrate.step")[0][0] == before


def test_a_source_written_during_the_window_is_refused_before_any_write(tmp_path, target_url):
    """--then-verify reads the source in place: HridaAI started on it again while catch-up had found its delta is
    refused before the first write to the target (exit 75, named); stopped again, the same command then goes
    through."""
    data, common = _installed(tmp_path, target_url)
    _change(data)
    steps = query(target_url, "SELECT count(*) FROM hridaai_migrate.step")[0][0]
    json_log = [a if a != "none" else "json" for a in common]
    proc = subprocess.Popen(MIGRATE + ["catch-up", "--then-verify", *json_log], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "HRIDAAI_MIGRATE_STOP_AT": "delta"})
    assert stopped_at_failpoint(proc, 300), "catch-up ended before its delta was found"
    assert (tmp_path / "w" / "snapshot-next" / "hridaai.db").is_symlink()  # read in place
    db = sqlite3.connect(data / "hridaai.db")
    db.execute("UPDATE chat SET title = 'HridaAI was started again' WHERE id = (SELECT min(id) FROM chat)")
    db.commit()
    db.close()
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 75 and "changed while catch-up read it" in err, err[-2000:]
    assert "READY" not in err and "Traceback" not in err
    assert query(target_url, "SELECT count(*) FROM hridaai_migrate.step")[0][0] == steps  # nothing written

    again = run_cli("catch-up", "--then-verify", *common)  # as the hint says: HridaAI stopped, catch-up again
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "all match" in again.stdout
    title = query(target_url, "SELECT title FROM chat WHERE id = (SELECT min(id) FROM chat)")[0][0]
    assert title == "HridaAI was started again"
