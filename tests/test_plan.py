"""The plan stage: `migrate plan` writes nothing but its work dir, and says the same thing for the same data.

- read-only: the source data dir byte-identical (and not even touched: names, sizes, mtimes), the target database
  exactly as it was (schemas, extensions, relations, every table's rows and content, sequences, database
  settings: the ledger schema never appears), for an empty target, one HridaAI made and used (with
  `--force-clear`, which only plans the clearing) and one a completed run loaded (the ledger is read, not
  written); the work dir holds exactly the snapshot, the scratch copy chromadb reads, the plan report, its lock
  and chromadb's schema cache;
- a golden plan for the small fixture (tests/data/golden/plan-small.json, `UPDATE_GOLDEN=1` rewrites it):
  tables, actions, load order, rows, bytes, batches, keys, FKs, every column's conversion, checks, policies,
  vector collections; cross-checked against facts the fixture's MANIFEST.md states independently;
- the second fixture (upgraded from 0.6.26) plans too, with its own revision, rows and checks.
"""

from __future__ import annotations

import asyncio
import copy
import difflib
import json
import os
import re
import sqlite3
import stat
from pathlib import Path

import asyncpg
import pytest

from conftest import ROOT, SMALL, SUITE_PASSWORD, UPGRADED, run_cli, tree_digest

GOLDEN = ROOT / "tests" / "data" / "golden" / "plan-small.json"
LEDGER_SCHEMA = "hridaai_migrate"


def plan_args(data: Path, work: Path, target: str, *extra: str) -> list[str]:
    return ["plan", "--data-dir", str(data), "--work-dir", str(work), "--target", target, "--log-format", "none",
            *extra]


# what "unchanged" means

def source_state(root: Path) -> dict:
    """Every entry under root: kind, size, mtime (ns) and, for files, sha256 — a read-only open changes none."""
    digest = tree_digest(root)
    state = {}
    for p in sorted([root, *root.rglob("*")]):
        st = p.lstat()
        rel = str(p.relative_to(root))
        state[rel] = (stat.S_IFMT(st.st_mode), st.st_size if p.is_file() else None, st.st_mtime_ns,
                      digest.get(rel))
    return state


def database_state(url: str) -> dict:
    """Everything a write could change in a database: schemas, extensions, relations, each table's row count and
    content digest, sequence positions, per-database settings."""
    async def go():
        conn = await asyncpg.connect(url)
        try:
            outside = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname !~ '^pg_temp'"
            state = {
                "schemas": [r[0] for r in await conn.fetch(
                    f"SELECT nspname FROM pg_namespace n WHERE {outside} ORDER BY 1")],
                "extensions": [tuple(r) for r in await conn.fetch(
                    "SELECT extname, extversion FROM pg_extension ORDER BY 1")],
                "relations": [tuple(r) for r in await conn.fetch(
                    f"SELECT n.nspname, c.relname, c.relkind::text FROM pg_class c "
                    f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {outside} ORDER BY 1, 2")],
                "sequences": [tuple(r) for r in await conn.fetch(
                    "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2")],
                "settings": [tuple(r) for r in await conn.fetch(
                    "SELECT coalesce(setrole, 0), setconfig::text FROM pg_db_role_setting s "
                    "JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = current_database() "
                    "ORDER BY 1")],
                "tables": {},
            }
            for schema, name, kind in state["relations"]:
                if kind in ("r", "p"):
                    q = f'"{schema}"."{name}"'
                    state["tables"][f"{schema}.{name}"] = tuple(await conn.fetchrow(
                        f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) "
                        f"FROM {q} t"))
            return state
        finally:
            await conn.close()

    return asyncio.run(go())


def expected_work_entries() -> set[str]:
    """The top level of a work dir after `migrate plan` (with --target: no embedded server)."""
    return {
        ".lock",  # snapshot.py: the work-dir lock two commands started at once wait on
        "snapshot",  # snapshot.py: hridaai.db + vector_db/ + manifest.json (README: migrate snapshot)
        # no "chroma-read" (vectors/source.py: the scratch copy chromadb opens, since it rewrites what it opens): the
        # direct reader knows this store, so chromadb is not needed and no second copy of the store is made
        "reports",  # commands.py: reports/plan.json
        # no .chromadb-<version>-schema.json (sources/chroma/store.py): the installed chromadb's internal schema
        # versions are known (KNOWN_SCHEMA_VERSIONS), so nothing is measured or cached
    }


def _empty(url: str, tmp_path: Path) -> list[str]:
    return []


def _hridaai_made_with_a_user(url: str, tmp_path: Path) -> list[str]:
    from test_preflight import hridaai_made_target

    hridaai_made_target(url, signed_up=True)
    return ["--force-clear"]  # plans the clearing `run --force-clear` would do; must not do it


def _loaded_by_a_run(url: str, tmp_path: Path) -> list[str]:
    run = run_cli("run", "--data-dir", str(SMALL), "--work-dir", str(tmp_path / "run-work"), "--target", url,
                  "--log-format", "none")
    assert run.returncode == 0, run.stderr[-3000:]
    return []


TARGETS = {"empty": _empty, "hridaai-made-with-a-user": _hridaai_made_with_a_user,
           "loaded-by-a-run": _loaded_by_a_run}


@pytest.mark.parametrize("target", list(TARGETS))
def test_plan_writes_nothing_but_its_work_dir(target, target_url, data_dir, tmp_path):
    extra = TARGETS[target](target_url, tmp_path)
    source = source_state(data_dir)
    before = database_state(target_url)
    work = tmp_path / "work"
    proc = run_cli(*plan_args(data_dir, work, target_url, "--json", *extra))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert not [c for c in doc["checks"] if c["severity"] == "error"], doc["checks"]

    assert source_state(data_dir) == source  # not one byte, name or mtime changed in the data dir
    after = database_state(target_url)
    assert after == before  # not one object, row or setting changed in the target
    if target == "empty":
        assert doc["mode"] == "create" and doc["target_state"].startswith("empty")
        assert LEDGER_SCHEMA not in after["schemas"] and not after["tables"] and not after["relations"]
        assert "vector" not in dict(after["extensions"])  # pgvector is created by run, not by plan
    elif target == "hridaai-made-with-a-user":
        assert doc["mode"] == "existing" and "holds data" in doc["target_state"]
        assert after["tables"]["public.user"][0] == 1  # --force-clear was only planned
        assert LEDGER_SCHEMA not in after["schemas"]
    else:
        assert doc["mode"].startswith("resume") and "ledger-found" in [c["code"] for c in doc["checks"]]
        assert after["tables"][f"{LEDGER_SCHEMA}.batch"][0] > 0  # the ledger was read, and is as it was

    assert {p.name for p in work.iterdir()} == expected_work_entries()
    assert {p.name for p in (work / "reports").iterdir()} == {"plan.json"}
    assert {p.name for p in (work / "snapshot").iterdir()} == {"hridaai.db", "manifest.json", "vector_db"}
    assert json.loads((work / "reports" / "plan.json").read_text()) == doc  # the report is what was printed
    manifest = json.loads((work / "snapshot" / "manifest.json").read_text())
    assert manifest["snapshot_id"] == doc["snapshot_id"]
    assert tree_digest(work / "snapshot" / "vector_db") == tree_digest(data_dir / "vector_db")
    for p in [work, *work.rglob("*")]:  # private to the tool's user (README: dirs 0700, files 0600)
        mode = stat.S_IMODE(p.lstat().st_mode)
        assert mode & 0o077 == 0, f"{p} is mode {mode:o}"


# the golden plan

def manifest_table(fixture: Path, section: str) -> list[list[str]]:
    """The body rows of the table under `## section` in a fixture's MANIFEST.md (backticks and ** removed)."""
    text = (fixture / "MANIFEST.md").read_text()
    body = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.M | re.S).group(1)
    rows = [[c.strip().strip("`*") for c in line.strip().strip("|").split("|")]
            for line in body.splitlines() if line.startswith("|")]
    return [r for r in rows[2:] if r[0] != "total"]


def manifest_revision(fixture: Path) -> str:
    text = (fixture / "MANIFEST.md").read_text()
    return re.search(r"^\| alembic revision \(alembic_version\) \| ([0-9a-f]{12}) \|", text, re.M).group(1)


def assert_plan_matches_fixture_facts(doc: dict, fixture: Path) -> None:
    """What the plan says against what the fixture's MANIFEST.md and its SQLite file say, independently."""
    rows = {t["name"]: t["rows"] for t in doc["tables"] if t["action"] != "absent"}
    assert rows == {name: int(n) for name, n in manifest_table(fixture, "Table row counts (hridaai.db)")}
    source = sqlite3.connect(f"file:{fixture / 'hridaai.db'}?immutable=1", uri=True)
    try:
        tables = {r[0] for r in source.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
        columns = {t: {r[1] for r in source.execute(f'PRAGMA table_info("{t}")')} for t in tables}
    finally:
        source.close()
    assert set(rows) == tables
    for t in doc["tables"]:
        if t["name"] in tables:  # every source column has a conversion (or says it is not in the target)
            assert {c["name"] for c in t["columns"] if c["source_type"] is not None} == columns[t["name"]]
            assert all(c["conversion"] for c in t["columns"]), t["name"]
    assert doc["source_revision"] == manifest_revision(fixture)
    collections = {c["name"]: (c["dimension"], c["count"]) for c in doc["vectors"]["collections"]}
    assert collections == {name: (int(dim), int(n))
                           for name, dim, n in manifest_table(fixture, "Chroma collections (vector_db/)")}
    # the NUL / surrogate scan: each non-zero cell is a counted policy warning naming the column
    policies = ["nul_in_text", "json_nul_escape", "json_lone_surrogate"]
    expected = {(policy, column, int(n)) for column, *counts in manifest_table(
        fixture, "NUL / surrogate scan of text and JSON columns") for policy, n in zip(policies, counts) if int(n)}
    found = set()
    for c in doc["checks"]:
        m = re.match(r"policy:(\w+)$", c["code"])
        if m and m.group(1) in policies:
            assert c["severity"] == "warning", c
            column, n = re.match(r"(\w+\.\w+): (\d+) values", c["message"]).groups()
            found.add((m.group(1), column, int(n)))
    assert found == expected


def normalise(doc: dict, *, paths: dict[str, str]) -> dict:
    """The plan without what changes from machine to machine or run to run: paths, the target URL, the snapshot
    id (a content hash, but of files this machine's SQLite writes), the server's version and features, and the
    catalog's list of known revisions (checked against `migrate schema list` instead); columns and the vector
    summary as lines, so that the golden file reads (and diffs) one column per line."""
    doc = copy.deepcopy(doc)
    assert re.fullmatch(r"[0-9a-f]{16,64}", doc["snapshot_id"]), doc["snapshot_id"]
    doc["snapshot_id"] = "<snapshot-id>"
    doc.pop("known_revisions")
    doc["server"] = {key: "<server>" for key in sorted(doc["server"])}
    target = doc["target"]
    assert SUITE_PASSWORD not in target and "****" in target, target  # masked
    replace = {target: "<target>", **paths}

    def clean(value):
        if isinstance(value, str):
            for real, placeholder in replace.items():
                value = value.replace(real, placeholder)
            return value
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    doc = clean(doc)
    for table in doc["tables"]:  # one line per column: "name: SOURCE -> target [NOT NULL]: conversion"
        table["columns"] = [f"{c['name']}: {c['source_type']} -> {c['target_type']}"
                            f"{'' if c['nullable'] else ' NOT NULL'}: {c['conversion']}" for c in table["columns"]]
    if doc.get("vectors"):
        doc["vectors"]["summary"] = doc["vectors"]["summary"].splitlines()  # readable diffs
    return doc


def dumps(doc: dict) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def compare_with_golden(actual: dict, golden_text: str) -> None:
    """Equal, or an AssertionError showing the unified diff (golden -> actual)."""
    text = dumps(actual)
    if text != golden_text:
        diff = list(difflib.unified_diff(golden_text.splitlines(), text.splitlines(), "golden", "actual",
                                         lineterm="", n=4))
        raise AssertionError(f"the plan differs from {GOLDEN.relative_to(ROOT)} (UPDATE_GOLDEN=1 rewrites it "
                             "after a reviewed change):\n" + "\n".join(diff[:120]))


MUTATIONS = {  # changes to the raw plan the golden comparison must see
    "a table's action": lambda d: d["tables"][0].update(action="quarantine"),
    "a column's conversion": lambda d: next(c for t in d["tables"] for c in t["columns"]
                                            if c["conversion"] != "as-is").update(conversion="as-is"),
    "a table's row count": lambda d: d["tables"][-1].update(rows=d["tables"][-1]["rows"] + 1),
    "a table's load order": lambda d: d["tables"][2].update(order=d["tables"][3]["order"]),
    "a check's level": lambda d: d["checks"][0].update(severity="info"),
    "a check's code": lambda d: d["checks"][0].update(code="something-else"),
    "a policy's action": lambda d: d["policies"].update(json_nan="reject"),
    "a collection's count": lambda d: d["vectors"]["collections"][0].update(count=0),
    "the schema mode": lambda d: d.update(mode="existing"),
}


def test_golden_plan_small(target_url, tmp_path):
    work = tmp_path / "work"
    proc = run_cli(*plan_args(SMALL, work, target_url, "--json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = json.loads(proc.stdout)
    listed = run_cli("schema", "list")
    assert raw["known_revisions"] == listed.stdout.split() and raw["source_revision"] in raw["known_revisions"]
    assert_plan_matches_fixture_facts(raw, SMALL)

    paths = {str(work): "<work-dir>", str(tmp_path): "<tmp>", str(ROOT): "<repo>"}
    actual = normalise(raw, paths=paths)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(dumps(actual))
    assert GOLDEN.exists(), f"no {GOLDEN.relative_to(ROOT)}: run this test once with UPDATE_GOLDEN=1"
    golden_text = GOLDEN.read_text()
    compare_with_golden(actual, golden_text)

    for what, mutate in MUTATIONS.items():  # the comparison is not blind to what matters
        changed = copy.deepcopy(raw)
        mutate(changed)
        with pytest.raises(AssertionError):
            compare_with_golden(normalise(changed, paths=paths), golden_text)
            pytest.fail(f"the golden comparison does not see {what}")


def test_plan_of_the_upgraded_fixture_reports_its_own_revision_and_data(target_url, tmp_path):
    work = tmp_path / "work"
    before = tree_digest(UPGRADED)
    proc = run_cli(*plan_args(UPGRADED, work, target_url, "--json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert tree_digest(UPGRADED) == before
    manifest = json.loads((work / "snapshot" / "manifest.json").read_text())
    assert doc["source_revision"] == manifest_revision(UPGRADED) == manifest["source_revision"]
    assert doc["snapshot_id"] == manifest["snapshot_id"]
    assert doc["mode"] == "create" and not [c for c in doc["checks"] if c["severity"] == "error"], doc["checks"]
    assert_plan_matches_fixture_facts(doc, UPGRADED)
    # the Peewee-era table HridaAI's schema no longer has: kept in quarantine, said so
    legacy = next(t for t in doc["tables"] if t["name"] == "migratehistory")
    assert legacy["action"] == "quarantine" and legacy["rows"] == 18
    check = next(c for c in doc["checks"] if c["code"] == "table-not-in-target")
    assert check["severity"] == "warning" and "migratehistory" in check["message"]
    assert {t["action"] for t in doc["tables"] if t["name"] != "migratehistory"} <= {"load", "stamp"}
