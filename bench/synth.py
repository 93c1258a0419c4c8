"""Deterministic synthetic HridaAI rows (users, chats with conversation trees, chat_message, channel messages).

Everything is driven by one ``random.Random`` seeded by the caller, so the same seed always yields the same rows.
Text comes from a pre-built corpus (words, punctuation, quotes, backslashes, newlines and non-ASCII scripts) that is
sliced at random offsets: cheap enough to produce hundreds of MB per minute.
"""
from __future__ import annotations

import json
import math
import random
import uuid
from typing import Iterator

MODELS = ["gpt-4o", "claude-3-5-sonnet", "llama3.1:8b", "mistral-small:latest", "qwen2.5:14b"]
WORDS = (
    "the of and to in is for on that with as by at from or be are was this it migration postgres sqlite table "
    "column row index query schema revision upgrade downgrade commit rollback backup restore token model "
    "assistant user system prompt answer embedding vector chunk cosine distance json jsonb text integer "
    "boolean timestamp epoch unicode utf8 encoding escape quote backslash null key primary foreign unique "
    "constraint transaction replica latency throughput pgvector chroma"
).split()
EXOTIC = [
    "שלום עולם", "我们把聊天记录迁移到PostgreSQL。", "naïve café", "👩🏽‍💻", "🚀", "Привет", "مرحبا", "\"quoted\"",
    "C:\\path\\to\\file", "```python\nprint('hi')\n```", "\n\n", "\t", "<script>alert(1)</script>", "ß→∑",
]
EPOCH_2023 = 1672531200  # 2023-01-01 UTC
SPAN = 2 * 365 * 86400


def new_id(rng: random.Random) -> str:
    """Return a deterministic uuid4 string drawn from ``rng``."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class Corpus:
    """A few MB of pseudo-text; ``text(n)`` returns an n-character slice at a random offset."""

    def __init__(self, rng: random.Random, size: int = 2_000_000) -> None:
        parts: list[str] = []
        total = 0
        while total < size:
            if rng.random() < 0.02:
                w = rng.choice(EXOTIC)
            else:
                w = rng.choice(WORDS)
                if rng.random() < 0.08:
                    w = w.capitalize() + ("." if rng.random() < 0.7 else ",")
            parts.append(w)
            total += len(w) + 1
        self.text_ = " ".join(parts)
        self.rng = rng

    def text(self, n: int) -> str:
        """Return about ``n`` characters of text (repeated slices when n exceeds the corpus)."""
        n = max(1, int(n))
        src = self.text_
        if n >= len(src):
            reps, rest = divmod(n, len(src))
            return src * reps + src[:rest]
        off = self.rng.randrange(0, len(src) - n)
        return src[off:off + n]


def dumps(obj, legacy: bool) -> str:
    """Serialise like HridaAI: orjson-style compact UTF-8, or legacy stdlib json (spaced, ASCII escapes)."""
    if legacy:
        return json.dumps(obj)
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def user_rows(rng: random.Random, n: int) -> tuple[list[tuple], list[tuple]]:
    """Return (user rows, auth rows) for ``n`` users; the first one is the admin."""
    users, auths = [], []
    for i in range(n):
        uid = new_id(rng)
        created = EPOCH_2023 + rng.randrange(SPAN // 4)
        email = f"user{i:05d}@example.com"
        role = "admin" if i == 0 else ("pending" if rng.random() < 0.05 else "user")
        settings = {"ui": {"theme": rng.choice(["dark", "light", "system"]), "models": [rng.choice(MODELS)],
                           "notificationEnabled": rng.random() < 0.5, "params": {"temperature": 0.7}}}
        oauth = {"oidc": {"sub": new_id(rng)}} if rng.random() < 0.2 else None
        users.append((uid, f"User {i}", email, role, "/user.png", created + rng.randrange(SPAN),
                      created + 60, created, dumps(settings, False), "null",
                      dumps(oauth, False), "null"))
        pw = "$2b$12$" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789./") for _ in range(53))
        auths.append((uid, email, pw, 1, new_id(rng)))
    return users, auths


USER_COLS = ("id", "name", "email", "role", "profile_image_url", "last_active_at", "updated_at", "created_at",
             "settings", "info", "oauth", "scim")
AUTH_COLS = ("id", "email", "password", "active", "session_stamp")
CHANNEL_COLS = ("id", "user_id", "name", "description", "data", "meta", "created_at", "updated_at", "type",
                "is_private")
CHAT_COLS = ("id", "user_id", "title", "created_at", "updated_at", "share_id", "archived", "chat", "pinned", "meta",
             "folder_id", "tasks", "summary", "last_read_at", "current_message_id", "variables", "timer_at")
CHAT_MESSAGE_COLS = ("id", "chat_id", "user_id", "role", "parent_id", "content", "output", "model_id", "files",
                     "sources", "embeds", "done", "status_history", "error", "usage", "created_at", "updated_at",
                     "context_summary", "meta")
MESSAGE_COLS = ("id", "user_id", "channel_id", "content", "data", "meta", "created_at", "updated_at", "parent_id",
                "reply_to_id", "is_pinned", "pinned_at", "pinned_by", "app_id")


def channel_rows(rng: random.Random, user_ids: list[str], n: int = 20) -> list[tuple]:
    """Return ``n`` channel rows (timestamps in ns)."""
    rows = []
    for i in range(n):
        ts = (EPOCH_2023 + rng.randrange(SPAN // 4)) * 1_000_000_000 + rng.randrange(10**9)
        rows.append((new_id(rng), rng.choice(user_ids), f"channel-{i}", "synthetic channel", "null", "null",
                     ts, ts + 10**9, rng.choice([None, "group", "dm"]), rng.choice([None, 0, 1])))
    return rows


def chat_sizes(rng: random.Random, n: int, median: float = 15_000, sigma: float = 0.9,
               cap: int = 4_000_000) -> list[int]:
    """Target chat JSON sizes: lognormal (median ``median``) plus a few 1-4 MB chats so the tail exists at any n."""
    sizes = [min(cap, max(800, int(rng.lognormvariate(math.log(median), sigma)))) for _ in range(n)]
    for _ in range(min(n, max(3, n // 5000))):
        sizes[rng.randrange(n)] = int(math.exp(rng.uniform(math.log(1e6), math.log(cap))))
    return sizes


def _message(rng, corpus, role, mid, parent, ts, model, n_chars) -> dict:
    msg = {"id": mid, "parentId": parent, "childrenIds": [], "role": role, "content": corpus.text(n_chars),
           "timestamp": ts}
    if role == "user":
        msg["models"] = [model]
    else:
        toks = rng.randrange(20, 4000)
        msg.update({"model": model, "modelName": model, "modelIdx": 0, "userContext": None, "done": True,
                    "usage": {"prompt_tokens": rng.randrange(10, 4000), "completion_tokens": toks,
                              "total_tokens": toks + 100, "response_token/s": round(rng.uniform(5, 150), 2)}})
    return msg


def _tree(rng: random.Random, corpus: Corpus, size: int, created: int, model: str) -> tuple[dict, list[dict], str]:
    """Build history.messages (dict), the current branch (list) and currentId for a ~``size``-byte chat."""
    pairs = max(1, min(300, size // 7000 + 1))
    per_pair = max(120, size / 2 / pairs - 700)  # each message is stored twice (history + messages[])
    history: dict[str, dict] = {}
    branch: list[dict] = []
    parent, ts = None, created
    for _ in range(pairs):
        for role, share in (("user", 0.2), ("assistant", 0.8)):
            mid = new_id(rng)
            ts += rng.randrange(5, 600)
            msg = _message(rng, corpus, role, mid, parent, ts, model, per_pair * share * rng.uniform(0.6, 1.4))
            if parent:
                history[parent]["childrenIds"].append(mid)
            history[mid] = msg
            branch.append(msg)
            parent = mid
    if pairs > 1 and rng.random() < 0.15:  # a regenerated answer kept in history only
        user_msg = branch[-2]
        mid = new_id(rng)
        alt = _message(rng, corpus, "assistant", mid, user_msg["id"], ts - 1, model, per_pair * 0.8)
        user_msg["childrenIds"].insert(0, mid)
        history[mid] = alt
    return history, branch, parent


def _chat_message_rows(rng, chat_id, user_id, history: dict, legacy: bool) -> list[tuple]:
    rows = []
    for mid, m in history.items():
        assistant = m["role"] == "assistant"
        status = None
        if assistant and rng.random() < 0.1:
            status = [{"action": "web_search", "description": "Searching \"x\"", "done": False},
                      {"action": "web_search", "description": "Searched 3 sites", "done": True}]
        rows.append((f"{chat_id}-{mid}", chat_id, user_id, m["role"], m["parentId"], dumps(m["content"], legacy),
                     "null", m.get("model"), "null", "null", "null", 1 if m.get("done", True) else 0,
                     dumps(status, legacy), "null", dumps(m.get("usage"), legacy), m["timestamp"],
                     m["timestamp"] + 2, None, "null"))
    return rows


def chat_rows(rng: random.Random, corpus: Corpus, user_ids: list[str], sizes: list[int]
              ) -> Iterator[tuple[tuple, list[tuple]]]:
    """Yield (chat row, its chat_message rows) for every target size in ``sizes``."""
    for size in sizes:
        chat_id, user_id = new_id(rng), rng.choice(user_ids)
        created = EPOCH_2023 + rng.randrange(SPAN)
        model = rng.choice(MODELS)
        title = corpus.text(rng.randrange(8, 60)).strip() or "New Chat"
        history, branch, current = _tree(rng, corpus, size, created, model)
        legacy = rng.random() < 0.3
        doc = {"id": "", "title": title, "models": [model], "params": {"temperature": 0.7},
               "history": {"messages": history, "currentId": current}, "messages": branch,
               "tags": [], "timestamp": created * 1000, "files": []}
        updated = branch[-1]["timestamp"]
        meta = {"tags": [rng.choice(WORDS)]} if rng.random() < 0.2 else {}
        row = (chat_id, user_id, title, created, updated, new_id(rng) if rng.random() < 0.01 else None,
               1 if rng.random() < 0.05 else 0, dumps(doc, legacy), 1 if rng.random() < 0.03 else 0,
               dumps(meta, legacy), None, rng.choice([None, "null"]), None, updated + rng.randrange(0, 3600),
               current, rng.choice([None, "{}"]), None)
        yield row, _chat_message_rows(rng, chat_id, user_id, history, legacy)


def message_rows(rng: random.Random, corpus: Corpus, user_ids: list[str], channel_ids: list[str],
                 n: int) -> Iterator[tuple]:
    """Yield ``n`` narrow channel ``message`` rows (timestamps in ns, some thread replies and pins)."""
    ts = EPOCH_2023 * 1_000_000_000
    recent: list[str] = []
    for _ in range(n):
        mid = new_id(rng)
        ts += rng.randrange(1, 60_000_000_000)
        parent = rng.choice(recent) if recent and rng.random() < 0.1 else None
        pinned = rng.random() < 0.01
        user = rng.choice(user_ids)
        text = corpus.text(min(4000, int(rng.lognormvariate(math.log(80), 0.8))))
        yield (mid, user, rng.choice(channel_ids), text, '{"files":[]}' if rng.random() < 0.8 else "null",
               '{"model_id":null}', ts, ts, parent, None, 1 if pinned else 0, ts if pinned else None,
               user if pinned else None, None)
        if len(recent) < 64:
            recent.append(mid)
        else:
            recent[rng.randrange(64)] = mid
