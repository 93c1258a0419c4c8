"""Stage 4 — verify: recompute everything from the snapshot and from the target, independently.

Counts are measured on both sides (never copied from the ledger); checksums are computed from canonical values;
differences are localised to keys; a random sample is compared field by field; alembic_version and sequences.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict, dataclass, field

import asyncpg

from migrator import ledger
from migrator.catalog import schema as cat
from migrator.context import RunContext
from migrator.convert.table import TableConverter
from migrator.parallel import run_all, spawn_pool
from migrator.plan.model import Plan, TablePlan
from migrator.snapshot import Snapshot
from migrator.sources import sqlite as src
from migrator.targets import postgres as pgt
from migrator.vectors import verify as vectors_verify
from migrator.verify import pool, table as vt
from migrator.verify.checksum import batch_digests, buckets_of

SHOW = 20
SAMPLE_CHUNK = 25


@dataclass
class VerifyReport:
    snapshot_id: str
    tables: dict[str, dict] = field(default_factory=dict)
    sample: dict = field(default_factory=dict)
    alembic: dict = field(default_factory=dict)
    sequences: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # measured, not a difference: e.g. HridaAI's search quality
    vectors: dict | None = None

    @property
    def ok(self) -> bool:
        """True only when every measurement matched."""
        return not self.problems

    def asdict(self) -> dict:
        """JSON form."""
        return {**asdict(self), "ok": self.ok}

    def asstr(self) -> str:
        """For people."""
        lines = [f"verify snapshot {self.snapshot_id}",
                 f"{'table':<26} {'source':>9} {'target':>9} {'quarant.':>9} {'checksum':>34}  result"]
        for name, t in self.tables.items():
            lines.append(f"{name:<26} {t['source_rows']:>9,} {t['target_rows']:>9,} {t['quarantined']:>9,} "
                         f"{t['checksum_target']:>34}  {'ok' if t['match'] else 'DIFFERS'}")
        lines.append(f"sample: {self.sample.get('compared', 0)} rows compared field by field, "
                     f"{len(self.sample.get('differences', []))} differences")
        lines.append(f"alembic_version: source {self.alembic.get('source')} target {self.alembic.get('target')}")
        if self.vectors:
            lines += ["", f"{'collection':<52} {'source':>7} {'target':>7} {'quar.':>5} {'self':>7} {'recall@10':>9}  result"]
            for name, c in self.vectors["collections"].items():
                lines.append(f"{name[:52]:<52} {c['source']:>7,} {c['target']:>7,} {c['quarantined']:>5} "
                             f"{c.get('self_retrieval') or '-':>7} {c.get('recall_at_10') or '-':>9}  "
                             f"{'ok' if c['match'] else 'DIFFERS'}")
            sr, search = self.vectors["self_retrieval"], self.vectors.get("search") or {}
            lines.append(f"self-retrieval {sr['hits']}/{sr['queries']}, recall@10 {self.vectors['recall_at_10']}")
            lines.append(f"HridaAI's search statement: recall@10 {search.get('recall_at_10')}, median "
                         f"{search.get('median_ms')} ms (index {search.get('method') or 'none'}, pgvector "
                         f"{search.get('pgvector')})")
        lines += [f"WARNING: {w}" for w in self.warnings]
        lines += ["", "RESULT: all match" if self.ok else "RESULT: DIFFERENCES FOUND"]
        lines += [f"  - {p}" for p in self.problems[:50]]
        return "\n".join(lines)


async def check(ctx: RunContext, *, sample_size: int = 200, seed: int | None = None) -> VerifyReport:
    """Compare snapshot and target; report every difference by table and key (then the vectors, by their lane).

    Raises TransientError (exit 75) when the target cannot be reached; differences are in the report, not raised."""
    settings, plan, snapshot = ctx.settings, ctx.plan, ctx.snapshot
    url = settings.target_url
    report = VerifyReport(snapshot.snapshot_id)
    conn = await pgt.connect(url)
    rng = random.Random(seed)
    try:
        policies = await _run_policies(conn, plan)
        tables = sorted(plan.tables, key=lambda t: t.order)
        jobs = await _jobs(conn, plan, [t for t in tables if t.action == "load"], rng)
        where = pool.Sides(url, plan.schema, snapshot.db_path, policies, sample_size)
        # the tables' sides and the vectors' checks at once, over one set of worker processes (fewer start-ups)
        executor = spawn_pool(max(1, settings.jobs), thread_when_one=True)
        try:
            sides, report.vectors = await run_all([
                pool.measure(where, list(jobs.values()), executor),
                vectors_verify.check(ctx, seed=seed, executor=executor)])
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
        samples: list[tuple[TablePlan, str, tuple]] = []
        for t in tables:
            if t.action == "load":
                samples += await _table(conn, where, plan, jobs[t.name], sides[t.name], report)
            elif t.action == "quarantine" and t.rows:
                await _quarantined_table(conn, t, report)
        await _sample(conn, plan, samples, report)
        await _alembic(conn, plan, snapshot, report)
        await _sequences(conn, plan, report)
        if report.vectors is not None:
            report.warnings += report.vectors["warnings"]
            report.problems += report.vectors["problems"]
    finally:
        await conn.close()
    return report


async def _run_policies(conn, plan: Plan) -> dict:
    steps = await ledger.steps(conn) if await ledger.exists(conn) else {}
    return json.loads(steps["policies"]) if steps.get("policies") else plan.policies


async def _jobs(conn, plan: Plan, tables: list[TablePlan], rng: random.Random) -> dict[str, pool.TableJob]:
    """Per table: the ledger's quarantined keys and overrides (set-NULL fixups, rewritten paths), a sample seed, a
    size for ordering."""
    sizes = await pool.table_sizes(conn, plan.schema)
    return {t.name: pool.TableJob(t, await ledger.quarantine_keys(conn, t.name), await ledger.source_overrides(conn, t.name),
                                  rng.getrandbits(64), sizes.get(t.name, 0)) for t in tables}


async def _table(conn, where: pool.Sides, plan: Plan, job: pool.TableJob, sides: dict, report: VerifyReport):
    """Compare the two sides' counts and checksums; localise differences to keys; the table's sample rows."""
    t, q_keys = job.table, job.q_keys
    source, target = sides["source"], sides["target"]
    src_sum, tgt_sum = source.sums, target.sums
    entry = {"source_rows": source.rows, "target_rows": tgt_sum.count, "quarantined": len(q_keys),
             "checksum_source": src_sum.total(), "checksum_target": tgt_sum.total(), "match": True}
    if not t.key:
        entry["compared_as"] = "multiset of full rows (no primary key, no unique index the source satisfies)"
    if source.rows != tgt_sum.count + len(q_keys):
        entry["match"] = False
        report.problems.append(f"{t.name}: source {source.rows} rows != target {tgt_sum.count} + quarantined "
                               f"{len(q_keys)}")
    if source.unledgered:
        entry["match"] = False
        report.problems.append(f"{t.name}: {len(source.unledgered)} rows the conversion rejects are not in the "
                               f"ledger's quarantine: {', '.join(source.unledgered[:SHOW])}")
    diff = src_sum.differing_buckets(tgt_sum)
    if diff:
        entry["match"] = False
        entry.update(await _localise(conn, where, plan, job, diff, report))
    report.tables[t.name] = entry
    return [(t, key, values) for key, values in source.sample]


async def _quarantined_table(conn, t: TablePlan, report: VerifyReport) -> None:
    n = len(await ledger.quarantine_keys(conn, t.name))
    ok = n == t.rows
    report.tables[t.name] = {"source_rows": t.rows, "target_rows": 0, "quarantined": n, "checksum_source": "-",
                             "checksum_target": "-", "match": ok}
    if not ok:
        report.problems.append(f"{t.name}: {t.rows} source rows, {n} in quarantine")


async def _localise(conn, where: pool.Sides, plan: Plan, job: pool.TableJob, buckets: set[int], report) -> dict:
    """Second pass over the differing buckets only: which keys are missing, extra or changed."""
    t = job.table
    conv = TableConverter(t, where.policies)
    src_rows: list[tuple[str, int]] = []
    lite = src.connect(where.db_path, immutable=True)
    try:
        for batch in vt.source_batches(lite, t, conv, job.overrides):
            src_rows += _in_buckets(t, batch, buckets, job.q_keys)
    finally:
        lite.close()
    tgt_rows: list[tuple[str, int]] = []
    async for batch in vt.target_batches(conn, plan.schema, t):
        tgt_rows += _in_buckets(t, batch, buckets, set())
    if t.key:
        src_map, tgt_map = dict(src_rows), dict(tgt_rows)
        missing = sorted(set(src_map) - set(tgt_map))
        extra = sorted(set(tgt_map) - set(src_map))
        changed = sorted(k for k in set(src_map) & set(tgt_map) if src_map[k] != tgt_map[k])
    else:  # a multiset of full rows: a changed row is one missing and one extra
        src_n, tgt_n = Counter(k for k, _ in src_rows), Counter(k for k, _ in tgt_rows)
        missing = sorted(f"{k} x{n}" if n > 1 else k for k, n in (src_n - tgt_n).items())
        extra = sorted(f"{k} x{n}" if n > 1 else k for k, n in (tgt_n - src_n).items())
        changed = []
    for label, keys in (("missing in target", missing), ("extra in target", extra), ("changed", changed)):
        if keys:
            how = "" if t.key else " (no key: rows named by their digest)"
            report.problems.append(f"{t.name}: {len(keys)} rows {label}{how}: {', '.join(keys[:SHOW])}")
    return {"missing": missing[:SHOW], "extra": extra[:SHOW], "changed": changed[:SHOW]}


def _in_buckets(t: TablePlan, batch: vt.Batch, buckets: set[int], q_keys: set[str]) -> list[tuple[str, int]]:
    """(key, row digest) of the batch's rows that fall in `buckets` (and are not quarantined)."""
    kept = vt.drop(batch, q_keys)
    digests, batch.nbytes = batch_digests(kept.columns, len(kept.keys))
    keys = vt.row_keys(t, kept, digests)
    return [(k, d) for k, b, d in zip(keys, buckets_of(keys), digests) if b in buckets]


async def _sample(conn, plan: Plan, samples: list, report: VerifyReport) -> None:
    """Compare the sampled source rows with the target's, field by field (one query per single-key table)."""
    diffs = []
    found = await _sample_rows(conn, plan, samples)
    for t, key, values in samples:
        if not t.key:
            continue
        rec = found[t.name].get(key) if t.name in found else await _sample_row(conn, plan, t, key)
        if rec is None:
            diffs.append(f"{t.name} {key}: missing in target")
            continue
        cols = [c.name for c in t.copy_columns]  # the converter's order, as the sampled values
        for c, want, got in zip(cols, values, tuple(rec)):
            if want != got:
                diffs.append(f"{t.name} {key} column {c}: source {str(want)[:60]!r} target {str(got)[:60]!r}")
    report.sample = {"compared": len(samples), "differences": diffs[:100]}
    report.problems += [f"sample: {d}" for d in diffs[:SHOW]]


def _select_sample(plan: Plan, t: TablePlan) -> str:
    return f"SELECT {', '.join(cat.qi(c.name) for c in t.copy_columns)} FROM {cat.qi(plan.schema)}.{cat.qi(t.name)}"


async def _sample_row(conn, plan: Plan, t: TablePlan, key: str):
    """The target row whose key columns, as text, are the sampled key's values (str of each)."""
    where = " AND ".join(f"{cat.qi(k)}::text = ${i + 1}" for i, k in enumerate(t.key))
    return await conn.fetchrow(f"{_select_sample(plan, t)} WHERE {where}", *[str(v) for v in json.loads(key)])


async def _sample_rows(conn, plan: Plan, samples: list) -> dict[str, dict[str, tuple]]:
    """{table: {sampled key: target row}} for the tables with a one-column key, SAMPLE_CHUNK keys a query; rows are
    matched exactly as _sample_row matches them (the key column as text = str of the sampled value)."""
    wanted: dict[str, tuple[TablePlan, dict[str, list[str]]]] = {}
    for t, key, _ in samples:
        if len(t.key or []) == 1:
            wanted.setdefault(t.name, (t, {}))[1].setdefault(str(json.loads(key)[0]), []).append(key)
    out: dict[str, dict[str, tuple]] = {}
    for name, (t, keys) in wanted.items():
        column = cat.qi(t.key[0])
        select = _select_sample(plan, t).replace("SELECT ", f"SELECT {column}::text, ", 1)
        texts, out[name] = list(keys), {}
        for i in range(0, len(texts), SAMPLE_CHUNK):
            for rec in await conn.fetch(f"{select} WHERE {column}::text = ANY($1::text[])", texts[i:i + SAMPLE_CHUNK]):
                for key in keys[rec[0]]:
                    out[name].setdefault(key, tuple(rec)[1:])
    return out


async def _alembic(conn, plan: Plan, snapshot: Snapshot, report: VerifyReport) -> None:
    try:
        rows = await conn.fetch(f"SELECT version_num FROM {cat.qi(plan.schema)}.alembic_version")
    except asyncpg.UndefinedTableError:
        rows = []
    target = rows[0][0] if len(rows) == 1 else None
    report.alembic = {"source": snapshot.source_revision, "target": target}
    if target != snapshot.source_revision:
        report.problems.append(f"alembic_version: target {target}, source {snapshot.source_revision}")


async def _sequences(conn, plan: Plan, report: VerifyReport) -> None:
    from migrator.catalog import capture as schema_capture

    live = await schema_capture.capture(conn, schema=plan.schema)
    for s in live.sequences:
        if not s.get("table"):
            continue
        top = await conn.fetchval(f"SELECT max({cat.qi(s['column'])}) FROM {cat.qi(plan.schema)}.{cat.qi(s['table'])}")
        last, called = await conn.fetchrow(f"SELECT last_value, is_called FROM {cat.qi(plan.schema)}.{cat.qi(s['name'])}")
        ok = top is None or (called and last >= top)
        report.sequences.append({"sequence": s["name"], "max": top, "last_value": last, "is_called": called, "ok": ok})
        if not ok:
            report.problems.append(f"sequence {s['name']}: last_value {last} < max({s['column']}) {top}")
