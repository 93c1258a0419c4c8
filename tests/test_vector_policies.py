"""Vector chunks under the conversion policies, end to end: a real Chroma store holding a NUL in a document, a NUL in
a metadata string and an Infinity in a metadata number; `migrate run` records each change under its own policy
(fixups.jsonl and the ledger), `--policy nul_in_text=reject` quarantines those chunks with their key instead, and
`migrate verify` accounts for both.

Not here: a lone surrogate (unit-tested in test_convert_vectors.py). No real store can hand one over: chromadb's
`add` refuses it (UnicodeEncodeError), and surrogate bytes written into chroma.sqlite3 come back from chromadb's
`get` as a missing document. NaN cannot be in a store either (SQLite stores a NaN REAL as NULL); Infinity can.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
from test_vectors import args, data_dir_with

from conftest import query, run_cli

COLLECTION = "file-a"
UNIT = f"vector:{COLLECTION}"
CLEAN = 30
DIRTY = {  # id -> (document, metadata as chromadb stores it)
    "nul-doc": ("before\x00after", {"name": "a.pdf", "start_index": 0}),
    "nul-meta": ("fine", {"name": "b\x00.pdf", "start_index": 1}),
    "inf-meta": ("fine", {"name": "c.pdf", "score": 1.0, "low": 2.0}),
}


def dirty_data_dir(tmp_path: Path) -> Path:
    """SMALL's hridaai.db and a store with CLEAN ordinary chunks plus DIRTY; `inf-meta`'s numbers made ±Infinity in
    chroma.sqlite3 itself (chromadb's add drops non-finite metadata; older writers stored them)."""
    import chromadb
    from chromadb.config import Settings

    data = data_dir_with(tmp_path, {COLLECTION: (CLEAN, 16)})
    store = data / "vector_db"
    client = chromadb.PersistentClient(path=str(store), settings=Settings(anonymized_telemetry=False))
    col = client.get_collection(COLLECTION)
    col.add(ids=list(DIRTY), embeddings=np.random.default_rng(3).standard_normal((len(DIRTY), 16)).astype(np.float32),
            documents=[d for d, _ in DIRTY.values()], metadatas=[m for _, m in DIRTY.values()])
    got = col.get(ids=list(DIRTY), include=["documents", "metadatas"])
    assert dict(zip(got["ids"], got["documents"])) == {k: d for k, (d, _) in DIRTY.items()}  # chromadb keeps NUL
    del col, client
    db = sqlite3.connect(store / "chroma.sqlite3")
    with db:
        changed = db.execute("UPDATE embedding_metadata SET float_value = CASE key WHEN 'score' THEN 9e999 ELSE -9e999 "
                             "END WHERE key IN ('score', 'low') AND id = (SELECT id FROM embeddings "
                             "WHERE embedding_id = 'inf-meta')").rowcount
    db.close()
    assert changed == 2
    return data


def _vector_fixups(work: Path) -> dict[tuple[str, str, str], dict]:
    rows = [json.loads(line) for line in (work / "reports" / "fixups.jsonl").read_text().splitlines()]
    return {(f["key"], f["column_name"], f["policy"]): f for f in rows if f["unit"] == UNIT}


def test_default_policies_name_each_chunk_change_and_verify_passes(target_url, tmp_path):
    data = dirty_data_dir(tmp_path)
    work = tmp_path / "w"
    common = args(data, work, target_url)
    run = run_cli("run", *common)
    assert run.returncode == 0, run.stderr[-3000:]
    fixups = _vector_fixups(work)
    assert {k: f["action"] for k, f in fixups.items()} == {
        ('["nul-doc"]', "text", "nul_in_text"): "strip",
        ('["nul-meta"]', "vmetadata", "nul_in_text"): "strip",
        ('["inf-meta"]', "vmetadata", "json_nan"): "null"}
    assert json.loads(fixups['["nul-doc"]', "text", "nul_in_text"]["original"]) == "before\x00after"
    ledger = query(target_url, "SELECT key, column_name, policy, action FROM hridaai_migrate.fixup WHERE unit = $1 "
                               "ORDER BY key, column_name, policy", UNIT)
    assert [tuple(r) for r in ledger] == sorted((*k, f["action"]) for k, f in fixups.items())
    assert query(target_url, "SELECT sum(fixups) FROM hridaai_migrate.batch WHERE unit = $1", UNIT)[0][0] == 3
    rows = {r["id"]: r for r in query(target_url, "SELECT id, text, vmetadata::text AS meta FROM document_chunk "
                                                  "WHERE id = ANY($1::text[])", list(DIRTY))}
    assert rows["nul-doc"]["text"] == "beforeafter"
    assert json.loads(rows["nul-meta"]["meta"]) == {"name": "b.pdf", "start_index": 1}
    assert json.loads(rows["inf-meta"]["meta"]) == {"name": "c.pdf", "score": None, "low": None}
    assert query(target_url, "SELECT count(*) FROM hridaai_migrate.quarantine WHERE unit = $1", UNIT)[0][0] == 0
    verify = run_cli("verify", *common, "--json")
    assert verify.returncode == 0, verify.stdout[-3000:]
    entry = json.loads(verify.stdout)["vectors"]["collections"][COLLECTION]
    assert entry["match"] and entry["source"] == entry["target"] == CLEAN + len(DIRTY)


def test_nul_in_text_reject_quarantines_the_chunks_with_their_key_and_verify_accounts(target_url, tmp_path):
    data = dirty_data_dir(tmp_path)
    work = tmp_path / "w"
    common = args(data, work, target_url)
    run = run_cli("run", *common, "--policy", "nul_in_text=reject")
    assert run.returncode == 0, run.stderr[-3000:]
    quarantine = {q["key"]: q for q in map(json.loads, (work / "reports" / "quarantine.jsonl").read_text().splitlines())
                  if q["unit"] == UNIT}
    assert {k: (q["policy"], q["column_name"]) for k, q in quarantine.items()} == {
        '["nul-doc"]': ("nul_in_text", "text"), '["nul-meta"]': ("nul_in_text", "vmetadata")}
    assert all("NUL" in q["reason"] and "(nul_in_text)" in q["reason"] for q in quarantine.values())
    kept = json.loads(quarantine['["nul-doc"]']["row_json"])  # the whole chunk, as the source held it
    assert kept["id"] == "nul-doc" and kept["document"] == "before\x00after" and len(kept["embedding"]) == 16
    ledger = query(target_url, "SELECT key, policy, column_name FROM hridaai_migrate.quarantine WHERE unit = $1 "
                               "ORDER BY key", UNIT)
    assert [tuple(r) for r in ledger] == [('["nul-doc"]', "nul_in_text", "text"),
                                          ('["nul-meta"]', "nul_in_text", "vmetadata")]
    loaded = {r[0] for r in query(target_url, "SELECT id FROM document_chunk WHERE collection_name = $1", COLLECTION)}
    assert len(loaded) == CLEAN + 1 and "inf-meta" in loaded and not {"nul-doc", "nul-meta"} & loaded
    # the other policies keep their defaults: the Infinity is still made null and counted
    assert set(_vector_fixups(work)) == {('["inf-meta"]', "vmetadata", "json_nan")}
    verify = run_cli("verify", *common, "--json")
    assert verify.returncode == 0, verify.stdout[-3000:]
    entry = json.loads(verify.stdout)["vectors"]["collections"][COLLECTION]
    assert entry["match"] and (entry["source"], entry["target"], entry["quarantined"]) == (CLEAN + 3, CLEAN + 1, 2)
