"""Generate (and cache) a synthetic HridaAI data dir: the real 0.12.4 schema filled with deterministic rows.

Usage as a library: ``ensure_dataset(GenParams(chats=20000, narrow=200000, seed=1))`` returns the data dir, built
once under ``bench/.cache/<params-hash>/`` and reused afterwards.  ``python -m bench.generate --help`` builds one
without running the benchmark.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import shutil
import sqlite3
import time
from pathlib import Path

from bench import synth

# the real 0.12.4 hridaai.db (made by the upstream app) whose schema the generated data dirs copy
SCHEMA_SOURCE = Path(__file__).resolve().parent.parent / "fixtures/hridaai-0.12.4-small/hridaai.db"
CACHE_DIR = Path(__file__).resolve().parent / ".cache"
GENERATOR_VERSION = 2  # bump when the generated rows change, so stale caches are not reused
FLUSH_BYTES = 64 << 20
HUGE_CHAT_BYTES = 30_600_000  # the tree builder lands ~3 % under its target: ~30 MB
STATS_TABLES = ("user", "chat", "chat_message", "message")


@dataclasses.dataclass(frozen=True)
class GenParams:
    """What to generate; the hash of these (plus the generator version) names the cache directory."""

    chats: int = 20_000
    narrow: int = 200_000
    users: int = 300
    seed: int = 1
    huge_chat: bool = False

    def key(self) -> str:
        """Stable short hash of the parameters and the generator version."""
        blob = json.dumps({**dataclasses.asdict(self), "v": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def copy_schema(src: Path, dst: sqlite3.Connection) -> list[str]:
    """Create every table of ``src`` in ``dst`` (plus the alembic_version row); return the deferred index DDL."""
    s = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    try:
        objs = s.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                         "AND name NOT LIKE 'sqlite_%' ORDER BY rowid").fetchall()
        version = s.execute("SELECT version_num FROM alembic_version").fetchall()
    finally:
        s.close()
    later = []
    for kind, _name, sql in objs:
        if kind == "table":
            dst.execute(sql)
        else:
            later.append(sql)  # indexes (and any triggers/views) after the bulk insert
    dst.executemany("INSERT INTO alembic_version (version_num) VALUES (?)", version)
    return later


def _insert_sql(table: str, cols: tuple[str, ...]) -> str:
    return f'INSERT INTO "{table}" ({", ".join(cols)}) VALUES ({", ".join("?" * len(cols))})'


def _write_chats(db: sqlite3.Connection, rng: random.Random, corpus: synth.Corpus, user_ids: list[str],
                 params: GenParams) -> None:
    sizes = synth.chat_sizes(rng, params.chats)
    if params.huge_chat and sizes:
        sizes[rng.randrange(len(sizes))] = HUGE_CHAT_BYTES
    chat_sql = _insert_sql("chat", synth.CHAT_COLS)
    cm_sql = _insert_sql("chat_message", synth.CHAT_MESSAGE_COLS)
    chats, msgs, pending = [], [], 0
    for row, cm_rows in synth.chat_rows(rng, corpus, user_ids, sizes):
        chats.append(row)
        msgs.extend(cm_rows)
        pending += len(row[7])
        if pending >= FLUSH_BYTES:
            _flush(db, [(chat_sql, chats), (cm_sql, msgs)])
            chats, msgs, pending = [], [], 0
    _flush(db, [(chat_sql, chats), (cm_sql, msgs)])


def _write_messages(db, rng, corpus, user_ids, channel_ids, n: int, batch: int = 100_000) -> None:
    sql = _insert_sql("message", synth.MESSAGE_COLS)
    buf = []
    for row in synth.message_rows(rng, corpus, user_ids, channel_ids, n):
        buf.append(row)
        if len(buf) >= batch:
            _flush(db, [(sql, buf)])
            buf = []
    _flush(db, [(sql, buf)])


def _flush(db: sqlite3.Connection, work: list[tuple[str, list]]) -> None:
    db.execute("BEGIN")
    for sql, rows in work:
        if rows:
            db.executemany(sql, rows)
    db.execute("COMMIT")


def payload_expr(con: sqlite3.Connection, table: str) -> str:
    """SQL summing a table's payload bytes (text/blob: byte length; integer/real: 8; NULL: 0)."""
    cols = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]
    return " + ".join(
        f"coalesce(sum(CASE typeof({c}) WHEN 'text' THEN length(CAST({c} AS BLOB)) WHEN 'blob' THEN length({c}) "
        f"WHEN 'null' THEN 0 ELSE 8 END), 0)" for c in cols)


def table_stats(db_path: Path, tables=STATS_TABLES) -> dict[str, dict]:
    """Rows and payload bytes per table (text/blob: UTF-8 byte length; integer/real: 8 bytes; NULL: 0)."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        out = {}
        for t in tables:
            rows, nbytes = con.execute(f'SELECT count(*), {payload_expr(con, t)} FROM "{t}"').fetchone()
            out[t] = {"rows": rows, "bytes": nbytes or 0}
        return out
    finally:
        con.close()


def build(params: GenParams, out_dir: Path, schema_source: Path = SCHEMA_SOURCE) -> dict:
    """Build a data dir (``hridaai.db`` + empty ``uploads/``) in ``out_dir``; return its manifest dict."""
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "uploads").mkdir(exist_ok=True)
    db_path = out_dir / "hridaai.db"
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("BEGIN")
        deferred = copy_schema(schema_source, db)
        db.execute("COMMIT")
        rng = random.Random(params.seed)
        corpus = synth.Corpus(random.Random(params.seed + 1))
        users, auths = synth.user_rows(rng, params.users)
        user_ids = [u[0] for u in users]
        channels = synth.channel_rows(rng, user_ids)
        _flush(db, [(_insert_sql("user", synth.USER_COLS), users), (_insert_sql("auth", synth.AUTH_COLS), auths),
                    (_insert_sql("channel", synth.CHANNEL_COLS), channels)])
        _write_chats(db, rng, corpus, user_ids, params)
        _write_messages(db, rng, corpus, user_ids, [c[0] for c in channels], params.narrow)
        db.execute("BEGIN")
        for sql in deferred:
            db.execute(sql)
        db.execute("COMMIT")
        db.execute("PRAGMA journal_mode=DELETE")
    finally:
        db.close()
    manifest = {"params": dataclasses.asdict(params), "generator_version": GENERATOR_VERSION,
                "schema_source": str(schema_source), "seconds": round(time.perf_counter() - t0, 1),
                "db_bytes": db_path.stat().st_size, "tables": table_stats(db_path)}
    (out_dir / "bench-manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def ensure_dataset(params: GenParams, cache_dir: Path = CACHE_DIR, log=print) -> tuple[Path, dict]:
    """Return (data dir, manifest), generating into the cache first if it is not there yet."""
    final = cache_dir / params.key()
    manifest_path = final / "bench-manifest.json"
    if manifest_path.exists():
        log(f"dataset: cached {final}")
        return final, json.loads(manifest_path.read_text())
    tmp = cache_dir / f".tmp-{params.key()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"dataset: generating {params} -> {final}")
    manifest = build(params, tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    log(f"dataset: done in {manifest['seconds']} s, hridaai.db {manifest['db_bytes'] / 1e6:.0f} MB")
    return final, manifest


def _link(src: str, dst: str) -> str:
    """Hard-link ``src`` as ``dst`` (a copy across file systems): what ``with_vector_store`` fills its dir with."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def with_vector_store(data_dir: Path, manifest: dict, vector_dir: Path, store: dict,
                      cache_dir: Path = CACHE_DIR, log=print) -> tuple[Path, dict]:
    """A data dir holding both ``data_dir``'s hridaai.db and ``vector_dir``'s ``vector_db/`` (``python -m bench
    --vector-collections``): hard links to the two cached dirs' files in ``cache_dir/combined-<both names>/``, made
    once (``migrate`` only reads its source; its snapshot copies regular files, which hard links are). Returns the
    dir and ``manifest`` with ``vector_store`` = ``store`` (the store's summary) added."""
    final = cache_dir / f"combined-{data_dir.name}-{vector_dir.name}"
    doc = {**manifest, "vector_store": store}
    if (final / "bench-manifest.json").exists():
        log(f"dataset + vector store: cached {final}")
        return final, doc
    tmp = cache_dir / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "uploads").mkdir(parents=True)
    _link(str(data_dir / "hridaai.db"), str(tmp / "hridaai.db"))
    shutil.copytree(vector_dir / "vector_db", tmp / "vector_db", copy_function=_link)
    (tmp / "bench-manifest.json").write_text(json.dumps(doc, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    log(f"dataset + vector store: linked into {final}")
    return final, doc


def main(argv=None) -> None:
    """CLI: generate a data dir into the cache (or ``--out``) and print its manifest."""
    ap = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__)
    ap.add_argument("--chats", type=int, default=GenParams.chats)
    ap.add_argument("--narrow", type=int, default=GenParams.narrow)
    ap.add_argument("--users", type=int, default=GenParams.users)
    ap.add_argument("--seed", type=int, default=GenParams.seed)
    ap.add_argument("--huge-chat", action="store_true", help="add one 30 MB chat")
    ap.add_argument("--out", type=Path, help="write here instead of the cache (must not exist)")
    a = ap.parse_args(argv)
    params = GenParams(a.chats, a.narrow, a.users, a.seed, a.huge_chat)
    if a.out:
        if a.out.exists():
            ap.error(f"{a.out} exists")
        print(json.dumps(build(params, a.out), indent=2))
    else:
        print(json.dumps(ensure_dataset(params)[1], indent=2))


if __name__ == "__main__":
    main()
