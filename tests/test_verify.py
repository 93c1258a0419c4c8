"""Tampering with the target is found and named by table and key."""

from __future__ import annotations

import json

from conftest import SMALL, query, run_cli


def test_changed_deleted_and_extra_rows_are_named(target_url, tmp_path):
    common = ["--data-dir", str(SMALL), "--work-dir", str(tmp_path / "w"), "--target", target_url,
              "--log-format", "none"]
    assert run_cli("run", *common).returncode == 0
    chat_id = query(target_url, "SELECT id FROM chat ORDER BY id LIMIT 1")[0][0]
    note_id = query(target_url, "SELECT id FROM note ORDER BY id LIMIT 1")[0][0]
    query(target_url, "UPDATE chat SET title = title || '!' WHERE id = $1", chat_id)
    query(target_url, "DELETE FROM note WHERE id = $1", note_id)
    query(target_url, "INSERT INTO tag (id, name, user_id) VALUES ('intruder', 'x', 'nobody')")
    verify = run_cli("verify", *common, "--json")
    assert verify.returncode == 3
    report = json.loads(verify.stdout)
    assert report["ok"] is False
    assert chat_id in json.dumps(report["tables"]["chat"]["changed"])
    assert note_id in json.dumps(report["tables"]["note"]["missing"])
    assert "intruder" in json.dumps(report["tables"]["tag"]["extra"])
    assert "verify found" in verify.stderr and chat_id in verify.stderr
