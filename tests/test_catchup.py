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
import time

from conftest import MIGRATE, ROOT, SMALL, query, run_cli


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
    again = run_cli("catch-up", *common, "--json")  # nothing changed since: nothing written
    assert again.returncode == 0 and not any(any(t.values()) for t in json.loads(again.stdout)["tables"].values())


def test_catch_up_killed_between_steps_then_again_is_exactly_once(tmp_path, target_url):
    data, common = _installed(tmp_path, target_url)
    _change(data)
    json_log = [a if a != "none" else "json" for a in common]
    proc = subprocess.Popen(MIGRATE + ["catch-up", *json_log], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "HRIDAAI_MIGRATE_STOP_AT": "catch-up"})
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        with open(f"/proc/{proc.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                break
        time.sleep(0.05)
    assert proc.poll() is None, "catch-up ended before its first step committed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps = query(target_url, "SELECT count(*) FROM hridaai_migrate.step WHERE name LIKE 'catchup:%' "
                              "AND detail IS NOT NULL")[0][0]
    assert steps == 1  # one step that wrote rows committed (with its rows), the next ones not
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
