"""Hypothesis round trips through a real PostgreSQL: what the converters produce is stored and read back equal.

For every column kind, lists of arbitrary SQLite values are converted as a load does (json validated, as the strict
path); whatever is not rejected is COPYed in binary into a real table and read back; json values must also survive
`::jsonb` and `->>` (what HridaAI's chat search does).
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from test_convert import KINDS, any_sqlite_value, convert_like_a_load

from conftest import _with_db


@pytest.fixture(scope="module")
def pg(pg_admin_url):
    """One event loop and one connection to a scratch database for the whole module."""
    loop = asyncio.new_event_loop()
    name = "rt_" + uuid.uuid4().hex[:10]
    admin = loop.run_until_complete(asyncpg.connect(pg_admin_url))
    loop.run_until_complete(admin.execute(f'CREATE DATABASE "{name}"'))
    conn = loop.run_until_complete(asyncpg.connect(_with_db(pg_admin_url, name)))
    for i, kind in enumerate(KINDS):
        loop.run_until_complete(conn.execute(f"CREATE TABLE k{i} (n integer PRIMARY KEY, v {kind})"))
    yield loop, conn
    loop.run_until_complete(conn.close())
    loop.run_until_complete(admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)'))
    loop.run_until_complete(admin.close())
    loop.close()


async def _round_trip(conn, table: str, kind: str, outputs: list) -> list:
    async with conn.transaction():
        await conn.execute(f"TRUNCATE {table}")
        await conn.copy_records_to_table(table, records=list(enumerate(outputs)), columns=["n", "v"])
        if kind == "json":  # every stored document survives extraction
            await conn.fetch(f"SELECT v::jsonb, v->>'a', v#>>'{{}}' FROM {table}")
        return [r[0] for r in await conn.fetch(f"SELECT v FROM {table} ORDER BY n")]


@pytest.mark.parametrize("index", range(len(KINDS)), ids=KINDS)
@given(values=st.lists(any_sqlite_value, min_size=1, max_size=40))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_converted_values_arrive_equal_in_postgresql(pg, index, values):
    loop, conn = pg
    kind = KINDS[index]
    outputs = []
    for value in values:
        status, out, _ = convert_like_a_load(kind, value)
        if status == "ok":
            outputs.append(out)
    back = loop.run_until_complete(_round_trip(conn, f"k{index}", kind, outputs))
    assert back == outputs
