"""`migrate tune-search`: the smallest `ivfflat.probes` (or `hnsw.ef_search`) with which HridaAI's own search
statement finds `--target-recall` of the exact top 10, set as the database's default (`ALTER DATABASE ... SET`),
which HridaAI's sessions inherit. No superuser: the database owner may do it. `--reset` undoes it.

With lists = 100 and the default probes = 1, an ivfflat index over one shared `document_chunk` searches one list of
a hundred for a query that wants the neighbours within one collection: HridaAI then misses most of them.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field

import asyncpg
import numpy as np

from migrator.errors import PreflightError
from migrator.settings import Settings
from migrator.targets import pgvector as pgv, postgres as pgt

K = 10
CANDIDATES = {"ivfflat.probes": (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
              "hnsw.ef_search": (40, 64, 100, 160, 250, 400, 640, 1000)}


@dataclass
class Tuning:
    """What tune-search measured and did."""

    setting: str | None
    database: str
    target_recall: float
    measured: dict[str, dict] = field(default_factory=dict)  # value -> {"recall_at_10", "median_ms"}
    before: str | None = None  # the database's default before
    chosen: str | None = None
    applied: bool = False
    note: str = ""
    for_dba: str | None = None  # the statement to run as the owner, when this role may not (--when-not-owner print)

    def asdict(self) -> dict:
        """JSON form."""
        return asdict(self)

    def asstr(self) -> str:
        """For people."""
        lines = [f"tune-search on database {self.database}: {self.setting or 'no vector index'}"]
        lines += [f"  {self.setting} = {v:>5}: recall@10 {m['recall_at_10']:.4f}, median {m['median_ms']:.2f} ms"
                  for v, m in self.measured.items()]
        lines.append(self.note)
        return "\n".join(lines)


async def tune(settings: Settings, spec: pgv.VectorTableSpec, *, target_recall: float, sample: int, seed: int,
               dry_run: bool, reset: bool, when_not_owner: str = "fail") -> Tuning:
    """Measure (and unless dry_run, set) the smallest value reaching `target_recall`; or reset it.

    A role that does not own the database may not change its defaults: PreflightError, or with
    `when_not_owner="print"` the statement for a DBA in the result (the Job's step must not fail a finished
    migration over a search setting, nor hide it)."""
    conn = await pgt.connect(settings.pgvector_url or settings.target_url)
    try:
        await pgv.register(conn)
        setup = await pgv.search_setup(conn)
        name = {"ivfflat": "ivfflat.probes", "hnsw": "hnsw.ef_search"}.get(setup["method"])
        out = Tuning(name, await conn.fetchval("SELECT current_database()"), target_recall, before=setup.get(name))
        if name is None:
            out.note = "document_chunk has no vector index: HridaAI searches exactly, nothing to tune"
        elif reset:
            out.applied = await _alter(conn, out, f"RESET {name}", when_not_owner)
            out.note = (f"reset: {name} is the server's default again for new sessions of {out.database}"
                        if out.applied else _not_owner(out))
        else:
            await _measure(conn, spec, name, out, sample=sample, seed=seed)
            if not dry_run and out.chosen is not None:
                out.applied = await _alter(conn, out, f"SET {name} = {int(out.chosen)}", when_not_owner)
            out.note = _note(out, dry_run) if out.for_dba is None else f"{_note(out, True)}\n{_not_owner(out)}"
        return out
    finally:
        await pgt.close_quietly(conn)


async def _measure(conn, spec: pgv.VectorTableSpec, name: str, out: Tuning, *, sample: int, seed: int) -> None:
    """Recall and latency of HridaAI's statement for each candidate value, smallest first, until one reaches the
    target (the largest measured is chosen when none does)."""
    queries = await _queries(conn, sample, seed)
    exact = [await _exact(conn, spec, collection, vector) for _, collection, vector in queries]
    limit = await _largest(conn, name)
    for value in _candidates(name, limit):
        recalls, latencies = [], []
        for (_, collection, vector), best in zip(queries, exact):
            t0 = time.perf_counter()
            rows = await pgv.search_as_hridaai(conn, spec, collection, vector, K, session={name: str(value)})
            latencies.append((time.perf_counter() - t0) * 1000)
            recalls.append(len({r[0] for r in rows} & best) / max(1, min(K, len(best))))
        out.measured[str(value)] = {"recall_at_10": round(float(np.mean(recalls)), 4),
                                    "median_ms": round(float(np.median(latencies)), 2)}
        out.chosen = str(value)
        if out.measured[str(value)]["recall_at_10"] >= out.target_recall:
            break


def _candidates(name: str, limit: int) -> list[int]:
    """The candidate values up to the limit, the limit itself last: for ivfflat, probes = lists is an exact search,
    so the target is always reachable (lists = 100 stopped the doubling at 64 before)."""
    values = [v for v in CANDIDATES[name] if v < limit]
    return values + [limit]


async def _queries(conn, sample: int, seed: int) -> list[tuple[str, str, np.ndarray]]:
    """Stored chunks drawn by seed (the same draw for the same seed), as query vectors."""
    salt = f"{random.Random(seed).random()}:"
    rows = await conn.fetch("SELECT id, collection_name, vector FROM document_chunk ORDER BY md5($1 || id), id "
                            "LIMIT $2", salt, sample)
    return [(r["id"], r["collection_name"], _array(r["vector"])) for r in rows]


async def _exact(conn, spec: pgv.VectorTableSpec, collection: str, vector: np.ndarray) -> set[str]:
    """The exact top 10 within the collection. The distance is ordered as an expression (`+ 0`) that no vector index
    can serve, so the planner reads the collection's rows (through its collection_name index) and sorts them all:
    exact, and without scanning the whole table as disabling every index scan would."""
    rows = await conn.fetch(f"SELECT id FROM document_chunk WHERE collection_name = $2 "
                            f"ORDER BY (vector <=> CAST($1::text AS {spec.column_type})) + 0, id LIMIT $3",
                            pgv.vector_literal(vector, spec.dimension), collection, K)
    return {r["id"] for r in rows}


async def _largest(conn, name: str) -> int:
    """ivfflat: its lists (more probes than lists is an exact scan already); hnsw: the largest candidate."""
    if name != "ivfflat.probes":
        return CANDIDATES[name][-1]
    definition = (await pgv.table_indexes(conn))[pgv.VECTOR_INDEX]["definition"]
    digits = "".join(ch for ch in definition.split("lists", 1)[-1] if ch.isdigit())
    return int(digits) if digits else CANDIDATES[name][-1]


def _array(value) -> np.ndarray:
    return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, dtype=np.float32)


async def _alter(conn, out: Tuning, clause: str, when_not_owner: str) -> bool:
    """ALTER DATABASE ... <clause>: True when done; False (out.for_dba set) when not permitted and told to print."""
    statement = f'ALTER DATABASE "{out.database.replace(chr(34), chr(34) * 2)}" {clause}'
    try:
        await conn.execute(statement)
        return True
    except asyncpg.InsufficientPrivilegeError as exc:
        if when_not_owner != "print":
            raise PreflightError(f"not allowed to change the defaults of database {out.database}", detail=str(exc),
                                 hint=f"run tune-search as the database's owner, or have a DBA run: {statement}"
                                 ) from None
        out.for_dba = statement + ";"
        return False


def _not_owner(out: Tuning) -> str:
    return (f"WARNING: this role does not own database {out.database}, so nothing was changed; have its owner "
            f"run: {out.for_dba}")


def _note(out: Tuning, dry_run: bool) -> str:
    best = out.measured.get(out.chosen or "", {})
    reached = best.get("recall_at_10", 0.0) >= out.target_recall
    what = (f"{out.setting} = {out.chosen} reaches recall@10 {best.get('recall_at_10')} (target "
            f"{out.target_recall})" if reached else
            f"WARNING: no value up to {out.chosen} reaches {out.target_recall} (best {best.get('recall_at_10')}); "
            "consider PGVECTOR_INDEX_METHOD=hnsw")
    if dry_run:
        return f"{what}; dry run: nothing changed (the database's default is {out.before})"
    return (f"{what}; set as the default of database {out.database} (was {out.before}): HridaAI's new sessions "
            f"use it. Undo: migrate tune-search --reset")

