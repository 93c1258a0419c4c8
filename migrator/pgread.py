"""Reading inside whatever transaction a connection is in: a plain connection gets its own transaction; one that is
already in a transaction (a pinned read, `catch-up --then-verify`: every connection sits in the exported snapshot's
REPEATABLE READ transaction, which asyncpg's `transaction()` refuses to nest in) gets a savepoint, rolled back
afterwards so that its SET LOCALs end with the block as they would with a transaction of its own."""

from __future__ import annotations

import contextlib

SAVEPOINT = "hridaai_migrate_read"


@contextlib.asynccontextmanager
async def block(conn, *, readonly: bool = False):
    """`async with block(conn):` where a reader needs a transaction (a cursor, SET LOCAL)."""
    if not conn.is_in_transaction():
        async with conn.transaction(readonly=readonly):
            yield
        return
    await conn.execute(f"SAVEPOINT {SAVEPOINT}")
    try:
        yield
    finally:
        await conn.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
        await conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
