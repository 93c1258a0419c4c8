"""migrator.targets.pgvector against a real PostgreSQL + pgvector (conftest: the embedded server or TEST_DATABASE_URL).

Async code runs through asyncio.run inside plain tests: no pytest-asyncio needed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

asyncpg = pytest.importorskip("asyncpg")
from pgvector import HalfVector  # noqa: E402
from pgvector.asyncpg import register_vector  # noqa: E402

from migrator.convert import vectors as chunk_values  # noqa: E402
from migrator.convert.policies import Context, resolve_actions  # noqa: E402
from migrator.errors import PreflightError  # noqa: E402
from migrator.targets import pgvector as pgv  # noqa: E402


def _find(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.exists()), None)


HERE = Path(__file__).resolve()
REFERENCE = HERE.parent / "data/pg-schema-0bd252b206fb.sql"  # the upstream schema dump, committed
FIXTURE = _find(HERE.parents[1] / "fixtures/hridaai-0.12.4-small",
                HERE.parents[2] / "shared/fixtures-real/hridaai-0.12.4-small")


@pytest.fixture
def db(target_url):
    """Run ``fn(conn)`` to completion on a fresh database (conftest's ``target_url``)."""

    def run(fn):
        async def go():
            conn = await asyncpg.connect(target_url)
            try:
                return await fn(conn)
            finally:
                await conn.close()

        return asyncio.run(go())

    return run


def _rows(n, dim, table_dim, *, seed=0, collection="file-x"):
    rng = np.random.default_rng(seed)
    src = rng.standard_normal((n, dim)).astype(np.float32)
    rows = [(f"id-{i}", pgv.pad(src[i], table_dim), collection, f"chunk {i} text",
             json.dumps({"start_index": i, "name": "a.pdf"})) for i in range(n)]
    return src, rows


async def _setup(conn, spec):
    await pgv.ensure_extension(conn)
    await pgv.create_table(conn, spec)


def _halfvec_supported(db) -> bool:
    async def probe(conn):
        version = await pgv.ensure_extension(conn)
        return pgv.version_tuple(version) >= pgv.HALFVEC_MIN_VERSION

    return db(probe)


# --- pure conversions ---------------------------------------------------------------------


@given(st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=64), st.integers(0, 64))
def test_pad_round_trip(values, extra):
    vec = np.array(values, dtype=np.float32)
    out = pgv.pad(vec, len(values) + extra)
    assert out.dtype == np.float32 and out.shape == (len(values) + extra,)
    assert np.array_equal(out[: len(values)], vec) and not out[len(values):].any()


def test_pad_refuses_longer_and_non_finite():
    with pytest.raises(ValueError, match="PGVECTOR_INITIALIZE_MAX_VECTOR_LENGTH to at least 4"):
        pgv.pad(np.ones(4), 3)
    with pytest.raises(ValueError, match="NaN"):
        pgv.pad([1.0, float("nan")], 4)


def test_spec_defaults_follow_hridaai():
    assert pgv.VectorTableSpec().method == "ivfflat"
    assert pgv.VectorTableSpec(halfvec=True, dimension=3072).method == "hnsw"
    assert pgv.VectorTableSpec(halfvec=True).column_type == "halfvec(1536)"
    assert pgv.VectorTableSpec(halfvec=True).opclass == "halfvec_cosine_ops"
    with pytest.raises(ValueError, match="PGVECTOR_USE_HALFVEC"):
        pgv.VectorTableSpec(dimension=3072)
    with pytest.raises(ValueError):
        pgv.VectorTableSpec(index_method="diskann")


def test_halfvec_encoding_without_server():
    spec = pgv.VectorTableSpec(dimension=4, halfvec=True)
    good, big = pgv.encode_vectors([np.array([0.5, -1.25, 3.0], dtype=np.float32),
                                    np.array([1e6, 0, 0, 0], dtype=np.float32)], spec)
    assert good[:4] == b"\x00\x04\x00\x00"  # dimension 4, then big-endian float16, zero-padded
    assert np.frombuffer(good[4:], dtype=">f2").tolist() == [0.5, -1.25, 3.0, 0.0]
    assert isinstance(big, str) and "halfvec range" in big


# --- DDL ----------------------------------------------------------------------------------


def test_ensure_extension_is_idempotent(db):
    async def go(conn):
        first = await pgv.ensure_extension(conn)
        return first, await pgv.ensure_extension(conn)

    first, second = db(go)
    assert first == second and re.match(r"\d+\.\d+", first)


def test_create_table_matches_hridaai_schema_dump(db):
    dump = REFERENCE.read_text()
    want_cols = re.search(r"CREATE TABLE public\.document_chunk \((.*?)\);", dump, re.S).group(1)
    want_idx = sorted(re.findall(r"^(CREATE INDEX idx_document_chunk_\w+ ON .*);$", dump, re.M))

    async def go(conn):
        await _setup(conn, pgv.VectorTableSpec())
        await pgv.create_table(conn, pgv.VectorTableSpec())  # idempotent
        cols = await conn.fetch(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS t, a.attnotnull "
            "FROM pg_attribute a WHERE a.attrelid = 'document_chunk'::regclass AND a.attnum > 0 "
            "ORDER BY a.attnum")
        idx = await conn.fetch("SELECT indexname, indexdef FROM pg_indexes "
                               "WHERE tablename = 'document_chunk' ORDER BY indexname")
        return cols, idx, await pgv.existing_table(conn)

    cols, idx, found = db(go)
    got_cols = ",\n".join(f"    {c['attname']} {c['t']}{' NOT NULL' if c['attnotnull'] else ''}"
                          for c in cols)
    assert got_cols.replace("vector(1536)", "public.vector(1536)") == want_cols.strip("\n")
    assert sorted(r["indexdef"] for r in idx if r["indexname"].startswith("idx_")) == want_idx
    assert {r["indexname"] for r in idx} == {"document_chunk_pkey", pgv.COLLECTION_INDEX,
                                             pgv.TEXT_INDEX}
    assert found == {"type": "vector", "dimension": 1536, "rows": 0, "vector_index": None}


def test_existing_table_none_and_mismatch(db):
    async def go(conn):
        assert await pgv.existing_table(conn) is None
        await _setup(conn, pgv.VectorTableSpec(dimension=384))
        with pytest.raises(PreflightError) as exc:
            await pgv.create_table(conn, pgv.VectorTableSpec(dimension=768))
        return exc.value

    err = db(go)
    assert "vector(384)" in err.detail and "PGVECTOR_INITIALIZE_MAX_VECTOR_LENGTH" in err.hint


# --- data and indexes ---------------------------------------------------------------------


def test_copy_pads_and_round_trips_exactly(db):
    spec = pgv.VectorTableSpec()
    src, rows = _rows(300, 384, spec.dimension)
    ctx = Context(resolve_actions({}))
    rows[5] = (rows[5][0], rows[5][1], rows[5][2], chunk_values.text("nul\x00in text", ctx), rows[5][4])
    rows[6] = (rows[6][0], rows[6][1], rows[6][2], None, None)

    async def go(conn):
        await _setup(conn, spec)
        result = await pgv.copy_chunks(conn, rows, spec=spec)
        await register_vector(conn)
        back = await conn.fetch("SELECT id, vector, text, vmetadata FROM document_chunk")
        return result, {r["id"]: r for r in back}

    result, back = db(go)
    assert result == 300 and [(f.column, f.policy, f.action) for f in ctx.fixups] == [("text", "nul_in_text", "strip")]
    for i in range(300):
        vec = back[f"id-{i}"]["vector"].to_numpy()
        assert vec.shape == (1536,) and np.array_equal(vec[:384], src[i]) and not vec[384:].any()
    assert back["id-5"]["text"] == "nulin text"
    assert back["id-6"]["text"] is None and back["id-6"]["vmetadata"] is None
    assert json.loads(back["id-7"]["vmetadata"]) == {"start_index": 7, "name": "a.pdf"}


def test_vmetadata_survives_jsonb(db):
    meta = {"s": "ünï ✓ 'q' \"dq\"", "i": 2**62, "f": 0.1, "neg": -3.5e-7, "b": False,
            "repr": "{'engine': '', 'model': 'x'}", "nul": "a\x00b"}
    ctx = Context(resolve_actions({}))
    text = chunk_values.vmetadata(meta, ctx)

    async def go(conn):
        await _setup(conn, pgv.VectorTableSpec(dimension=3))
        await pgv.copy_chunks(conn, [("a", pgv.pad([1, 0], 3), "c", "t", text)],
                              spec=pgv.VectorTableSpec(dimension=3))
        return await conn.fetchval("SELECT vmetadata FROM document_chunk"), await conn.fetchval(
            "SELECT vmetadata ->> 'b' FROM document_chunk")

    stored, b_text = db(go)
    assert json.loads(stored) == {**meta, "nul": "ab"}
    assert [(f.column, f.policy) for f in ctx.fixups] == [("vmetadata", "nul_in_text")]
    assert b_text == "false"  # why HridaAI's str(False) filters never match (§5)


@pytest.mark.parametrize("method", ["ivfflat", "hnsw"])
def test_vector_index_and_nearest_neighbour(db, method):
    spec = pgv.VectorTableSpec(dimension=1536, index_method=method)
    src, rows = _rows(400, 384, spec.dimension, seed=1)

    async def go(conn):
        await _setup(conn, spec)
        await pgv.copy_chunks(conn, rows, spec=spec)
        made = await pgv.build_vector_index(conn, spec)
        again = await pgv.build_vector_index(conn, spec)
        await register_vector(conn)
        await conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in await conn.fetch(
            "EXPLAIN SELECT id FROM document_chunk ORDER BY vector <=> $1 LIMIT 1",
            pgv.pad(src[123], spec.dimension)))
        hit = await conn.fetchrow(
            "SELECT id, vector <=> $1 AS d FROM document_chunk ORDER BY vector <=> $1 LIMIT 1",
            pgv.pad(src[123], spec.dimension))
        idx = await conn.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = $1",
                                  pgv.VECTOR_INDEX)
        return made, again, plan, hit, idx, await pgv.existing_table(conn)

    made, again, plan, hit, idx, found = db(go)
    assert made.created and made.name == "idx_document_chunk_vector" and made.method == method
    assert not again.created and again.detail == "already exists"
    assert pgv.VECTOR_INDEX in plan
    assert hit["id"] == "id-123" and abs(hit["d"]) < 1e-6
    params = "(lists='100')" if method == "ivfflat" else "(m='16', ef_construction='64')"
    assert idx == (f"CREATE INDEX idx_document_chunk_vector ON public.document_chunk "
                   f"USING {method} (vector vector_cosine_ops) WITH {params}")
    assert found["vector_index"] == method


def test_ivfflat_never_on_empty_table_and_method_conflict(db):
    spec = pgv.VectorTableSpec(dimension=8)

    async def go(conn):
        await _setup(conn, spec)
        empty = await pgv.build_vector_index(conn, spec)
        await pgv.copy_chunks(conn, _rows(10, 8, 8)[1], spec=spec)
        deferred = await pgv.build_vector_index(conn, spec, min_rows=50 * spec.ivfflat_lists)
        built = await pgv.build_vector_index(conn, pgv.VectorTableSpec(dimension=8, index_method="hnsw"))
        with pytest.raises(PreflightError, match="exists as hnsw"):
            await pgv.build_vector_index(conn, spec)
        return empty, deferred, built

    empty, deferred, built = db(go)
    assert not empty.created and "0 rows" in empty.detail
    assert not deferred.created and "10 rows < 5000" in deferred.detail
    assert built.created and built.method == "hnsw"


def test_halfvec_mode(db):
    spec = pgv.VectorTableSpec(dimension=1536, halfvec=True)
    if not _halfvec_supported(db):  # only an external server can be that old: the embedded one has pgvector 0.8
        assert os.environ.get("TEST_DATABASE_URL"), "the embedded server's pgvector must support halfvec"

        async def refused(conn):
            with pytest.raises(PreflightError, match="halfvec needs pgvector >= 0.7.0"):
                await pgv.create_table(conn, spec)

        db(refused)
        pytest.skip("TEST_DATABASE_URL's pgvector < 0.7.0 has no halfvec (refusal checked)")
    src, rows = _rows(50, 384, spec.dimension, seed=2)

    async def go(conn):
        await _setup(conn, spec)
        await pgv.copy_chunks(conn, rows, spec=spec)
        made = await pgv.build_vector_index(conn, spec)
        await register_vector(conn)
        back = await conn.fetchval("SELECT vector FROM document_chunk WHERE id = 'id-9'")
        hit = await conn.fetchrow(
            "SELECT id, vector <=> $1 AS d FROM document_chunk ORDER BY vector <=> $1 LIMIT 1",
            HalfVector(pgv.pad(src[9], spec.dimension)))
        return made, back, hit, await pgv.existing_table(conn)

    made, back, hit, found = db(go)
    assert made.created and made.method == "hnsw"
    assert np.array_equal(back.to_numpy()[:384], src[9].astype(np.float16))
    assert hit["id"] == "id-9" and abs(hit["d"]) < 1e-3
    assert found["type"] == "halfvec" and found["dimension"] == 1536


def test_real_fixture_end_to_end(db, tmp_path):
    """Every chunk of the real 0.12.4 store lands padded, and finds itself by cosine distance."""
    chroma = pytest.importorskip("migrator.sources.chroma.client")
    fixture = FIXTURE
    if fixture is None:
        pytest.skip("fixture hridaai-0.12.4-small not found")
    store = tmp_path / "vector_db"
    shutil.copytree(fixture / "vector_db", store)
    for p in [store, *store.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)
    spec = pgv.VectorTableSpec()
    source = {}
    rows = []
    for info in chroma.describe(store):
        for batch in chroma.iter_batches(store, info.name, batch_size=100):
            for c in batch.chunks:
                source[c.id] = c.embedding
                rows.append((c.id, pgv.pad(c.embedding, spec.dimension), info.name,
                             *chunk_values.loaded_values(c)))

    async def go(conn):
        await _setup(conn, spec)
        result = await pgv.copy_chunks(conn, rows, spec=spec)
        await register_vector(conn)
        back = {r["id"]: r["vector"].to_numpy() for r in
                await conn.fetch("SELECT id, vector FROM document_chunk")}
        probe = next(iter(source))
        hit = await conn.fetchrow(
            "SELECT id, vector <=> $1 AS d FROM document_chunk ORDER BY vector <=> $1 LIMIT 1",
            pgv.pad(source[probe], spec.dimension))
        return result, back, probe, hit

    result, back, probe, hit = db(go)
    assert result == len(source) == 662
    assert all(np.array_equal(back[i][:384], v) and not back[i][384:].any()
               for i, v in source.items())
    assert hit["id"] == probe and abs(hit["d"]) < 1e-6


def test_copy_refuses_a_vector_pgvector_cannot_store(db):
    spec = pgv.VectorTableSpec(dimension=4)

    async def go(conn):
        await _setup(conn, spec)
        with pytest.raises(ValueError, match="chunk b: vector holds NaN"):
            await pgv.copy_chunks(conn, [("a", [1.0, 0, 0], "c", None, None),
                                         ("b", [float("nan"), 0, 0, 0], "c", None, None)], spec=spec)
        return await conn.fetchval("SELECT count(*) FROM document_chunk")

    assert db(go) == 0
