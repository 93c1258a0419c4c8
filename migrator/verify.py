"""Stage 4 — verify: recompute everything from the snapshot and from the target, independently.

Counts are measured on both sides (never copied from the ledger); checksums are computed from canonical values;
differences are localised to keys; a random sample is compared field by field; alembic_version and sequences.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field

import asyncpg

from migrator import catalog as cat
from migrator import ledger, load_parts
from migrator.checksum import TableSum, bucket_of, row_digest
from migrator.plan_model import Plan, TablePlan
from migrator.rows import TableConverter
from migrator.snapshot import Snapshot
from migrator.sources import sqlite as src
from migrator.targets import postgres as pgt

SHOW = 20


@dataclass
class VerifyReport:
    snapshot_id: str
    tables: dict[str, dict] = field(default_factory=dict)
    sample: dict = field(default_factory=dict)
    alembic: dict = field(default_factory=dict)
    sequences: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
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
            sr = self.vectors["self_retrieval"]
            lines.append(f"self-retrieval {sr['hits']}/{sr['queries']}, recall@10 {self.vectors['recall_at_10']}")
        lines += ["", "RESULT: all match" if self.ok else "RESULT: DIFFERENCES FOUND"]
        lines += [f"  - {p}" for p in self.problems[:50]]
        return "\n".join(lines)


async def check(url: str, plan: Plan, snapshot: Snapshot, *, sample_size: int = 200, seed: int | None = None,
                settings=None) -> VerifyReport:
    """Compare snapshot and target; report every difference by table and key."""
    report = VerifyReport(snapshot.snapshot_id)
    conn = await pgt.connect(url)
    lite = src.connect(snapshot.db_path, immutable=True)
    rng = random.Random(seed)
    try:
        policies = await _run_policies(conn, plan)
        samples: list[tuple[TablePlan, str, tuple]] = []
        for t in sorted(plan.tables, key=lambda t: t.order):
            if t.action == "load":
                samples += await _table(conn, lite, plan, t, policies, report, rng, sample_size)
            elif t.action == "quarantine" and t.rows:
                await _quarantined_table(conn, t, report)
        await _sample(conn, plan, samples, report)
        await _alembic(conn, plan, snapshot, report)
        await _sequences(conn, plan, report)
        if settings is not None and plan.vectors:
            from migrator import vectors_verify

            report.vectors = await vectors_verify.check(settings, plan, snapshot, seed=seed)
            report.problems += report.vectors["problems"]
    finally:
        lite.close()
        await conn.close()
    return report


async def _run_policies(conn, plan: Plan) -> dict:
    steps = await ledger.steps(conn) if await ledger.exists(conn) else {}
    return json.loads(steps["policies"]) if steps.get("policies") else plan.policies


async def _table(conn, lite, plan: Plan, t: TablePlan, policies: dict, report: VerifyReport, rng, k: int):
    conv = TableConverter(t, policies)
    q_keys = await _quarantine_keys(conn, t.name)
    set_null = await _set_null_fixups(conn, t.name)
    cols = conv.columns
    src_sum, tgt_sum, sample = TableSum(), TableSum(), []
    source_rows = 0
    for key, values in _source_rows(lite, t, conv, set_null):
        source_rows += 1
        if key in q_keys:
            continue
        src_sum.add(key, row_digest(values))
        if len(sample) < k:
            sample.append((t, key, values))
        elif rng.random() < k / max(source_rows, 1):
            sample[rng.randrange(k)] = (t, key, values)
    async for key, values in _target_rows(conn, plan.schema, t, cols):
        tgt_sum.add(key, row_digest(values))
    entry = {"source_rows": source_rows, "target_rows": tgt_sum.count, "quarantined": len(q_keys),
             "checksum_source": src_sum.total(), "checksum_target": tgt_sum.total(), "match": True}
    if source_rows != tgt_sum.count + len(q_keys):
        entry["match"] = False
        report.problems.append(f"{t.name}: source {source_rows} rows != target {tgt_sum.count} + quarantined "
                               f"{len(q_keys)}")
    diff = src_sum.differing_buckets(tgt_sum)
    if diff:
        entry["match"] = False
        entry.update(await _localise(conn, lite, plan, t, conv, set_null, q_keys, diff, report))
    report.tables[t.name] = entry
    return sample


def _source_rows(lite, t: TablePlan, conv: TableConverter, set_null: dict):
    idx = {c: i for i, c in enumerate(conv.columns)}
    for chunk in _chunks(src.iter_rows(lite, t.name, conv.source_columns), 500):
        res = conv.convert(chunk)
        for key, row in zip(res.keys, res.rows):
            if key in set_null:
                row = list(row)
                for column in set_null[key]:
                    row[idx[column]] = None
                row = tuple(row)
            yield key, row
        for q in res.quarantine:
            yield q[0], None


def _chunks(it, n):
    buf = []
    for x in it:
        buf.append(x)
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf


async def _target_rows(conn, schema: str, t: TablePlan, cols: list[str]):
    keys = t.key or []
    select = ", ".join(cat.qi(c) for c in keys + cols)
    async with conn.transaction(readonly=True):
        async for rec in conn.cursor(f"SELECT {select} FROM {cat.qi(schema)}.{cat.qi(t.name)}", prefetch=1000):
            values = tuple(rec)
            yield ledger.dumps(list(values[:len(keys)])), values[len(keys):]


async def _quarantine_keys(conn, unit: str) -> set[str]:
    if not await ledger.exists(conn):
        return set()
    return {r[0] for r in await conn.fetch(f"SELECT key FROM {ledger.S}.quarantine "
                                           f"WHERE split_part(unit, '{load_parts.SEP}', 1) = $1", unit)}


async def _set_null_fixups(conn, unit: str) -> dict[str, list[str]]:
    if not await ledger.exists(conn):
        return {}
    out: dict[str, list[str]] = {}
    for key, column in await conn.fetch(f"SELECT key, column_name FROM {ledger.S}.fixup "
                                        f"WHERE split_part(unit, '{load_parts.SEP}', 1) = $1 "
                                        "AND policy = 'orphan_set_null'", unit):
        out.setdefault(key, []).append(column)
    return out


async def _quarantined_table(conn, t: TablePlan, report: VerifyReport) -> None:
    n = len(await _quarantine_keys(conn, t.name))
    ok = n == t.rows
    report.tables[t.name] = {"source_rows": t.rows, "target_rows": 0, "quarantined": n, "checksum_source": "-",
                             "checksum_target": "-", "match": ok}
    if not ok:
        report.problems.append(f"{t.name}: {t.rows} source rows, {n} in quarantine")


async def _localise(conn, lite, plan, t, conv, set_null, q_keys, buckets: set[int], report) -> dict:
    """Second pass over the differing buckets only: which keys are missing, extra or changed."""
    src_map = {k: row_digest(v) for k, v in _source_rows(lite, t, conv, set_null)
               if v is not None and k not in q_keys and bucket_of(k) in buckets}
    tgt_map = {}
    async for k, v in _target_rows(conn, plan.schema, t, conv.columns):
        if bucket_of(k) in buckets:
            tgt_map[k] = row_digest(v)
    missing = sorted(set(src_map) - set(tgt_map))
    extra = sorted(set(tgt_map) - set(src_map))
    changed = sorted(k for k in set(src_map) & set(tgt_map) if src_map[k] != tgt_map[k])
    for label, keys in (("missing in target", missing), ("extra in target", extra), ("changed", changed)):
        if keys:
            report.problems.append(f"{t.name}: {len(keys)} rows {label}: {', '.join(keys[:SHOW])}")
    return {"missing": missing[:SHOW], "extra": extra[:SHOW], "changed": changed[:SHOW]}


async def _sample(conn, plan: Plan, samples: list, report: VerifyReport) -> None:
    diffs = []
    for t, key, values in samples:
        keys = t.key or []
        if not keys:
            continue
        cols = [c.name for c in t.copy_columns]  # the converter's order, as the sampled values
        where = " AND ".join(f"{cat.qi(k)}::text = ${i + 1}" for i, k in enumerate(keys))
        key_values = [str(v) for v in json.loads(key)]
        rec = await conn.fetchrow(f"SELECT {', '.join(cat.qi(c) for c in cols)} FROM {cat.qi(plan.schema)}."
                                  f"{cat.qi(t.name)} WHERE {where}", *key_values)
        if rec is None:
            diffs.append(f"{t.name} {key}: missing in target")
            continue
        for c, want, got in zip(cols, values, tuple(rec)):
            if want != got:
                diffs.append(f"{t.name} {key} column {c}: source {str(want)[:60]!r} target {str(got)[:60]!r}")
    report.sample = {"compared": len(samples), "differences": diffs[:100]}
    report.problems += [f"sample: {d}" for d in diffs[:SHOW]]


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
    from migrator import schema_capture

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
