"""A hostile HridaAI source, built from a copy of the small real fixture plus injected cases.

`build()` writes DATA_DIR/hridaai.db into a fresh directory (the committed fixture is only read) and returns what it
injected: the fixups and quarantined rows a correct migration must report, each by table, key and policy.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from conftest import SMALL

BIG_CHAT_BYTES = 31 * 1024 * 1024
ADMIN = "97cd791e-ce9d-4924-b91c-b7e163d58051"
DELETED_USER = "7d89c620-a258-48ed-bf0e-fa6e75e6afac"
KNOWLEDGE = "f466fb87-006b-451d-889e-97db809c80e0"
FILE = "78fcbff4-14e4-4fd3-8acd-3201e0ee284b"
FILE2 = "0d596965-aae9-48c7-b305-4abd2ad024f6"
CHANNEL = "b5dc686e-f0b5-4216-b228-b2c869bff61d"
NOTE = "e253645a-782f-4def-ac0d-25520e06353e"
GROUP = "84731866-2fa6-4574-b120-fb9f6989188b"
T = 1704067200


def key(*values) -> str:
    """A row key as the migrator writes it (ASCII JSON list of the primary-key values)."""
    return json.dumps(list(values))


@dataclass
class Expected:
    """What the injected cases must produce."""

    fixups: set = field(default_factory=set)  # (table, key, column, policy)
    quarantine: set = field(default_factory=set)  # (table, key, policy)
    unique_conflicts: dict = field(default_factory=dict)  # table -> keys

    def fix(self, table: str, k: str, column: str, policy: str) -> None:
        self.fixups.add((table, k, column, policy))

    def reject(self, table: str, k: str, policy: str) -> None:
        self.quarantine.add((table, k, policy))


def build(dest: Path, *, duplicates: bool = False, big_chat: bool = True) -> Expected:
    """Copy the small fixture's hridaai.db into dest and inject every hostile case."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SMALL / "hridaai.db", dest / "hridaai.db")
    exp = Expected()
    db = sqlite3.connect(dest / "hridaai.db", isolation_level=None)
    try:
        _legacy_datetime_columns(db)
        db.execute("BEGIN")
        chats = [r[0] for r in db.execute("SELECT id FROM chat ORDER BY id")]
        _text_cases(db, exp, chats)
        _json_cases(db, exp, chats)
        _typed_cases(db, exp, chats)
        _orphans(db, exp, chats)
        if big_chat:
            _big_chat(db)
        if duplicates:
            _duplicates(db, exp)
        db.execute("COMMIT")
    finally:
        db.close()
    return exp


def _legacy_datetime_columns(db: sqlite3.Connection) -> None:
    """Peewee-era shape: chat.created_at/updated_at declared DATETIME (holding epoch integers)."""
    db.execute("PRAGMA writable_schema = ON")
    db.execute("UPDATE sqlite_master SET sql = replace(replace(sql, 'created_at BIGINT', 'created_at DATETIME'), "
               "'updated_at BIGINT', 'updated_at DATETIME') WHERE type = 'table' AND name = 'chat'")
    db.execute("PRAGMA writable_schema = OFF")


def _text_cases(db, exp: Expected, chats: list[str]) -> None:
    db.execute("UPDATE chat SET title = 'Hello' || char(0) || 'World' WHERE id = ?", (chats[0],))
    exp.fix("chat", key(chats[0]), "title", "nul_in_text")
    db.execute("UPDATE note SET title = char(0) || 'Meeting' WHERE id = ?", (NOTE,))
    exp.fix("note", key(NOTE), "title", "nul_in_text")
    users = [r[0] for r in db.execute("SELECT id FROM user WHERE id != ? ORDER BY id", (DELETED_USER,))]
    db.execute("UPDATE user SET bio = CAST(x'4361666580ff20c3a9' AS TEXT) WHERE id = ?", (users[0],))
    exp.fix("user", key(users[0]), "bio", "invalid_utf8")
    db.execute("UPDATE user SET username = ? WHERE id = ?", ("u" * 60, users[1]))
    exp.fix("user", key(users[1]), "username", "varchar_overflow")
    db.execute("UPDATE user SET date_of_birth = 'born in spring' WHERE id = ?", (users[2],))
    exp.fix("user", key(users[2]), "date_of_birth", "date_invalid")
    db.execute("UPDATE channel SET description = CAST(x'c328' AS TEXT) WHERE id = ?", (CHANNEL,))
    exp.fix("channel", key(CHANNEL), "description", "invalid_utf8")


def _json_cases(db, exp: Expected, chats: list[str]) -> None:
    nul = json.dumps({"title": "x", "messages": [{"content": "a\u0000b"}]})  # stdlib writes \\u0000
    db.execute("UPDATE chat SET chat = ? WHERE id = ?", (nul, chats[1]))
    exp.fix("chat", key(chats[1]), "chat", "json_nul_escape")
    lone = '{"title": "y", "messages": [{"content": "broken \\ud83d emoji", "ok": "\\ud83d\\ude00"}]}'
    db.execute("UPDATE chat SET chat = ? WHERE id = ?", (lone, chats[2]))
    exp.fix("chat", key(chats[2]), "chat", "json_lone_surrogate")
    both = '{"a": "\\u0000", "b": "\\udc00", "c": "\\\\u0000 is fine"}'
    db.execute("UPDATE chat SET meta = ? WHERE id = ?", (both, chats[3]))
    exp.fix("chat", key(chats[3]), "meta", "json_nul_escape")
    exp.fix("chat", key(chats[3]), "meta", "json_lone_surrogate")
    fb = db.execute("SELECT id FROM feedback ORDER BY id").fetchall()
    db.execute("UPDATE feedback SET data = '{\"rating\": NaN, \"big\": 1e400}' WHERE id = ?", fb[0])
    exp.fix("feedback", key(fb[0][0]), "data", "json_nan")
    msg = db.execute("SELECT id FROM message ORDER BY id").fetchone()[0]
    db.execute("UPDATE message SET data = '{\"files\": [], \"score\": -Infinity, \"s\": \"NaN\"}' WHERE id = ?", (msg,))
    exp.fix("message", key(msg), "data", "json_nan")
    mem = [r[0] for r in db.execute("SELECT id FROM memory ORDER BY id")]
    db.execute("UPDATE memory SET meta = 'not json {' WHERE id = ?", (mem[0],))
    exp.reject("memory", key(mem[0]), "invalid_json")
    db.execute("UPDATE memory SET meta = CAST(x'7b2261223a2022ff227d' AS TEXT) WHERE id = ?", (mem[1],))
    exp.fix("memory", key(mem[1]), "meta", "invalid_utf8")
    db.execute("UPDATE memory SET meta = 'null' WHERE id = ?", (mem[2],))  # JSON null: stays distinct from SQL NULL
    db.execute("UPDATE memory SET meta = NULL WHERE id = ?", (mem[3],))
    db.execute("UPDATE memory SET meta = ? WHERE id = ?", (json.dumps(json.dumps({"a": 1})), mem[4]))


def _typed_cases(db, exp: Expected, chats: list[str]) -> None:
    db.execute("UPDATE chat SET archived = 'true' WHERE id = ?", (chats[4],))
    exp.fix("chat", key(chats[4]), "archived", "bool_nonstandard")
    db.execute("UPDATE chat SET pinned = 2 WHERE id = ?", (chats[5],))
    exp.fix("chat", key(chats[5]), "pinned", "bool_nonstandard")
    db.execute("UPDATE auth SET active = x'31' WHERE id = ?", (ADMIN,))  # the text '1', stored without affinity
    exp.fix("auth", key(ADMIN), "active", "bool_nonstandard")
    db.execute("UPDATE chat SET updated_at = '2024-01-01 10:00:00' WHERE id = ?", (chats[6],))
    exp.fix("chat", key(chats[6]), "updated_at", "int_from_datetime")
    cm = db.execute("SELECT id FROM chat_message ORDER BY id").fetchone()[0]
    db.execute("UPDATE chat_message SET created_at = CAST('1704067200' AS BLOB) WHERE id = ?", (cm,))
    exp.fix("chat_message", key(cm), "created_at", "int_from_text")
    fb = db.execute("SELECT id FROM feedback ORDER BY id").fetchall()
    db.execute("UPDATE feedback SET created_at = 1704089093.75 WHERE id = ?", fb[1])
    exp.fix("feedback", key(fb[1][0]), "created_at", "int_from_real")
    db.execute("INSERT INTO config_old (id, data, version, created_at, updated_at) VALUES "
               "(1, '{\"ui\": {}}', 0, ?, '2024-01-01 00:00:00')", (T,))
    exp.fix("config_old", key(1), "created_at", "timestamp_from_epoch")


def _orphans(db, exp: Expected, chats: list[str]) -> None:
    """One orphan (or more) for every foreign key of HridaAI's schema."""
    chat = next(r[0] for r in db.execute(
        "SELECT c.id FROM chat c WHERE EXISTS (SELECT 1 FROM shared_chat s WHERE s.chat_id = c.id) "
        "AND EXISTS (SELECT 1 FROM chat_message m WHERE m.chat_id = c.id) ORDER BY id") if r[0] not in chats[:8])
    for table in ("chat_message", "shared_chat"):  # rows of a deleted chat
        for (rid,) in db.execute(f"SELECT id FROM {table} WHERE chat_id = ?", (chat,)).fetchall():
            exp.reject(table, key(rid), "orphan")
    db.execute("DELETE FROM chat WHERE id = ?", (chat,))
    for table in ("oauth_session", "group_member"):  # rows of a deleted user
        for (rid,) in db.execute(f"SELECT id FROM {table} WHERE user_id = ?", (DELETED_USER,)).fetchall():
            exp.reject(table, key(rid), "orphan")
    db.execute("DELETE FROM user WHERE id = ?", (DELETED_USER,))
    rows = {
        "api_key": ("INSERT INTO api_key (id, user_id, key, data, created_at, updated_at) VALUES "
                    "('key_ghost', 'ghost-user', 'sk-ghost', '{\"n\": \"\\u0000\"}', ?, ?)", ["key_ghost"]),
        "chat_file": ("INSERT INTO chat_file (id, user_id, chat_id, file_id, created_at, updated_at) VALUES "
                      f"('cf-1', '{ADMIN}', 'ghost-chat', '{FILE}', ?, ?), "
                      f"('cf-2', '{ADMIN}', (SELECT min(id) FROM chat), 'ghost-file', ?, ?)", ["cf-1", "cf-2"]),
        "channel_file": ("INSERT INTO channel_file (id, user_id, channel_id, file_id, created_at, updated_at, "
                         f"message_id) VALUES ('chf-1', '{ADMIN}', 'ghost-channel', '{FILE}', ?, ?, NULL), "
                         f"('chf-2', '{ADMIN}', '{CHANNEL}', 'ghost-file', ?, ?, NULL), "
                         f"('chf-3', '{ADMIN}', '{CHANNEL}', '{FILE2}', ?, ?, 'ghost-message')",
                         ["chf-1", "chf-2", "chf-3"]),
        "channel_webhook": ("INSERT INTO channel_webhook (id, user_id, channel_id, name, token, created_at, updated_at) "
                            f"VALUES ('wh-1', '{ADMIN}', 'ghost-channel', 'hook', 'tok', ?, ?)", ["wh-1"]),
        "group_member": ("INSERT INTO group_member (id, group_id, user_id, created_at, updated_at) VALUES "
                         f"('gm-ghost', 'ghost-group', '{ADMIN}', ?, ?)", ["gm-ghost"]),
        "knowledge_directory": ("INSERT INTO knowledge_directory (id, knowledge_id, parent_id, name, user_id, "
                                f"created_at, updated_at) VALUES ('kd-1', 'ghost-knowledge', NULL, 'a', '{ADMIN}', ?, ?),"
                                f" ('kd-2', '{KNOWLEDGE}', 'ghost-dir', 'b', '{ADMIN}', ?, ?), "
                                f"('kd-3', '{KNOWLEDGE}', 'kd-2', 'c', '{ADMIN}', ?, ?)", ["kd-1", "kd-2", "kd-3"]),
        "knowledge_file": ("INSERT INTO knowledge_file (id, user_id, knowledge_id, file_id, created_at, updated_at, "
                           f"directory_id) VALUES ('kf-1', '{ADMIN}', 'ghost-knowledge', '{FILE2}', ?, ?, NULL), "
                           f"('kf-2', '{ADMIN}', '{KNOWLEDGE}', 'ghost-file', ?, ?, NULL)", ["kf-1", "kf-2"]),
        "pinned_note": ("INSERT INTO pinned_note (id, user_id, note_id, created_at) VALUES "
                        f"('pn-ghost', '{ADMIN}', 'ghost-note', ?)", ["pn-ghost"]),
    }
    for table, (sql, ids) in rows.items():
        db.execute(sql, [T] * sql.count("?"))
        for rid in ids:
            exp.reject(table, key(rid), "orphan")
    # ON DELETE SET NULL foreign keys: kept, the reference set to NULL
    db.execute(f"INSERT INTO knowledge_file (id, user_id, knowledge_id, file_id, created_at, updated_at, directory_id) "
               f"VALUES ('kf-3', '{ADMIN}', '{KNOWLEDGE}', '{FILE2}', ?, ?, 'ghost-dir')", (T, T))
    exp.fix("knowledge_file", key("kf-3"), "directory_id", "orphan_set_null")
    db.execute("UPDATE \"group\" SET parent_group_id = 'ghost-group' WHERE id = ?", (GROUP,))
    exp.fix("group", key(GROUP), "parent_group_id", "orphan_set_null")


def _big_chat(db) -> None:
    """One chat larger than 30 MB (inline attachments make real ones that big)."""
    chunk = "lorem ipsum dolor sit amet " * 4000
    messages = {f"m{i}": {"id": f"m{i}", "role": "user", "content": chunk} for i in range(BIG_CHAT_BYTES // len(chunk) + 1)}
    doc = json.dumps({"title": "big", "history": {"messages": messages, "currentId": "m0"}}, ensure_ascii=False)
    assert len(doc) > 30 * 1024 * 1024
    db.execute("INSERT INTO chat (id, user_id, title, created_at, updated_at, archived, chat, pinned, meta) "
               "VALUES ('big-chat', ?, 'big', ?, ?, 0, ?, 0, '{}')", (ADMIN, T, T, doc))


def _duplicates(db, exp: Expected) -> None:
    """What SQLite accepted before uq_user_email_lower existed (and without ix_prompt_new_command)."""
    db.execute("DROP INDEX uq_user_email_lower")
    db.execute("INSERT INTO user (id, name, email, role, created_at, updated_at, last_active_at) VALUES "
               "('dup-user', 'Ada again', 'ADMIN@hridaai.local', 'user', ?, ?, ?)", (T, T, T))
    exp.unique_conflicts["user"] = [ADMIN, "dup-user"]
    db.execute("DROP INDEX ix_prompt_new_command")
    first = db.execute("SELECT id, command FROM prompt ORDER BY id").fetchone()
    db.execute("INSERT INTO prompt (id, command, user_id, name, content, is_active, created_at, updated_at) "
               "VALUES ('dup-prompt', ?, ?, 'again', 'x', 1, ?, ?)", (first[1], ADMIN, T, T))
    exp.unique_conflicts["prompt"] = [first[0], "dup-prompt"]
