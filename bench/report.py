"""Turn raw benchmark measurements into the summary rows, the console table and the JSON document."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from bench.pgutil import BENCH_TABLES


def median(values):
    """Median of the known values (None skipped); None when none is known."""
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def ratio(a, b):
    """a ÷ b; None when a is unknown or b unknown or 0, so a figure that was not measured shows as "-" in a report
    instead of failing it (shared by both reports and the vector bench's event timeline)."""
    return a / b if a is not None and b else None


def migrate_table_rate(runs: list[dict], table: str, rows: int, nbytes: int) -> dict:
    """Median per-table load window over successful runs, as rows/s and MB/s."""
    windows = [r["run"]["tables"].get(table, {}).get("window_s") for r in runs if r["run"]["ok"]]
    w = median(windows)
    return {"window_s": w, "rows_per_s": ratio(rows, w), "mb_per_s": ratio(nbytes / 1e6, w)}


def summarize(stats: dict, baselines: dict, runs: list[dict], cores: int | None = None) -> dict:
    """Per-table and total summary rows (medians), the migrate/verify wall times and peak RSS, and where the CPU
    went (``cpu``)."""
    ok = [r for r in runs if r["run"]["ok"]]
    rows_out = []
    for t in BENCH_TABLES:
        st, b = stats[t], baselines[t]
        mig = migrate_table_rate(runs, t, st["rows"], st["bytes"])
        rows_out.append({"table": t, "rows": st["rows"], "mb": st["bytes"] / 1e6,
                         "migrate_rows_per_s": mig["rows_per_s"], "migrate_mb_per_s": mig["mb_per_s"],
                         "migrate_window_s": mig["window_s"],
                         "ceiling_rows_per_s": b["ceiling"]["rows_per_s"], "ceiling_mb_per_s": b["ceiling"]["mb_per_s"],
                         "naive_rows_per_s": b["naive"]["rows_per_s"], "naive_scaled": b["naive"]["scaled"],
                         "row_by_row_rows_per_s": b["row_by_row"]["rows_per_s"],
                         **_ratios(mig["rows_per_s"], b["ceiling"]["rows_per_s"], b["naive"]["rows_per_s"],
                                   b["row_by_row"]["rows_per_s"])})
    rows_out.append(_total_row(stats, baselines, ok))
    all_rows = sum(s["rows"] for s in stats.values())
    run_s = median([r["run"]["seconds"] for r in ok])
    return {
        "tables": rows_out,
        "migrate": {"runs": len(runs), "succeeded": len(ok), "run_seconds": run_s,
                    "verify_seconds": median([r["verify"]["seconds"] for r in ok if r.get("verify")]),
                    "verify_ok": [r["verify"]["ok"] for r in ok if r.get("verify")],
                    "peak_rss_mb": median([r["run"]["peak_rss_mb"] for r in ok]),
                    "verify_peak_rss_mb": median([r["verify"]["peak_rss_mb"] for r in ok if r.get("verify")]),
                    "peak_tree_rss_mb": median([r["run"].get("peak_tree_rss_mb") for r in ok]),
                    "verify_peak_tree_rss_mb": median([r["verify"].get("peak_tree_rss_mb") for r in ok
                                                        if r.get("verify")]),
                    "all_tables_rows": all_rows, "end_to_end_rows_per_s": ratio(all_rows, run_s),
                    "phases_s": {k: median([r["run"].get("phases", {}).get(k) for r in ok]) for k in PHASES},
                    "rss_by_role": roles_of([r["run"] for r in ok]),
                    "verify_rss_by_role": roles_of([r["verify"] for r in ok if r.get("verify")])},
        "cpu": cpu_summary(baselines, ok, cores),
        "install": install_summary(ok),
    }


# migrate_runner.event_phases' keys, in the order printed (the snapshot/plan and lane ones only with vectors)
PHASES = ("before_load_s", "snapshot_s", "plan_s", "load_s", "tables_from_s", "tables_s", "vectors_from_s",
          "vectors_s", "finalize_s", "after_s")


def roles_of(children: list[dict]) -> dict | None:
    """Per-process peak RSS by role (main, worker, ...) of the first child that has it."""
    return next((c["rss_by_role"] for c in children if c.get("rss_by_role")), None)


def install_summary(ok_runs: list[dict]) -> dict | None:
    """The whole install (``--vector-collections``): the vector lane from the runs' events, the ingest ceiling
    (measured after the first run) and `migrate run`'s wall time over it; None when neither was measured."""
    vec = [r["run"].get("vectors") or {} for r in ok_runs]
    ing = next((r["ingest_ceiling"] for r in ok_runs if r.get("ingest_ceiling")), None) or {}
    if not ing and not any(v.get("vectors") for v in vec):
        return None
    run_s, ing_s = median([r["run"]["seconds"] for r in ok_runs]), ing.get("seconds")
    first_s = ok_runs[0]["run"]["seconds"] if ok_runs else None
    return {"vectors": median([v.get("vectors") for v in vec]),
            "vector_load_s": median([v.get("load_window_s") for v in vec]),
            "vectors_per_s": median([v.get("vectors_per_s") for v in vec]),
            "vector_load_and_indexes_s": median([v.get("load_and_indexes_s") for v in vec]),
            "index_builds_s": median([(v.get("phases_s") or {}).get("index_builds_s") for v in vec]),
            "ingest_ceiling_s": ing_s, "ingest_rows": ing.get("rows"), "ingest_bytes": ing.get("bytes"),
            "ingest_tables": ing.get("tables"), "ingest_error": ing.get("error"),
            "run_s": run_s, "run_over_ingest": ratio(run_s, ing_s),
            "first_run_s": first_s, "first_run_over_ingest": ratio(first_s, ing_s)}


def _ratios(mig, ceil, naive, rbr) -> dict:
    """migrate against each baseline, and the ceiling against the slower ones: the most any migrator can reach
    against them on this server (a target above ceiling ÷ naive cannot be met here)."""
    return {"migrate_vs_ceiling": ratio(mig, ceil), "migrate_vs_naive": ratio(mig, naive),
            "migrate_vs_row_by_row": ratio(mig, rbr), "ceiling_vs_naive": ratio(ceil, naive),
            "ceiling_vs_row_by_row": ratio(ceil, rbr)}


def cpu_summary(baselines: dict, ok_runs: list[dict], cores: int | None) -> dict:
    """Core-seconds of the ceiling (three tables) and of `migrate run`, split into the client's own CPU and the
    rest of the machine (the server); and the wall time migrate's own server work needs on these cores."""
    ceil = [baselines[t]["ceiling"] for t in BENCH_TABLES]
    have = all(c.get("busy_core_s") is not None for c in ceil)
    ceil_wall = sum(c["seconds"] for c in ceil) if all(c.get("seconds") for c in ceil) else None
    ceil_busy = sum(c["busy_core_s"] for c in ceil) if have else None
    ceil_client = sum(c.get("client_core_s") or 0 for c in ceil) if have else None
    run_s = median([r["run"]["seconds"] for r in ok_runs])
    busy = median([r["run"].get("busy_core_s") for r in ok_runs])
    tool = median([r["run"].get("tool_core_s") for r in ok_runs])
    server = busy - tool if busy is not None and tool is not None else None
    server_bound = server / cores if server is not None and cores else None
    return {"cores": cores, "ceiling_s": ceil_wall, "ceiling_busy_core_s": ceil_busy,
            "ceiling_client_core_s": ceil_client,
            "ceiling_server_core_s": ceil_busy - ceil_client if ceil_busy is not None else None,
            "migrate_s": run_s, "migrate_busy_core_s": busy, "migrate_tool_core_s": tool,
            "migrate_server_core_s": server, "migrate_server_bound_s": server_bound,
            "best_vs_ceiling_without_client": ratio(ceil_wall, server_bound)}


def _total_row(stats, baselines, ok_runs) -> dict:
    """The three benchmark tables together: migrate by the whole ``run`` wall time, baselines by summed time."""
    rows = sum(stats[t]["rows"] for t in BENCH_TABLES)
    nbytes = sum(stats[t]["bytes"] for t in BENCH_TABLES)
    run_s = median([r["run"]["seconds"] for r in ok_runs])

    def total(kind):
        secs = [stats[t]["rows"] / baselines[t][kind]["rows_per_s"] for t in BENCH_TABLES
                if baselines[t][kind]["rows_per_s"]]
        return rows / sum(secs) if len(secs) == len(BENCH_TABLES) else None

    ceil, naive, rbr = total("ceiling"), total("naive"), total("row_by_row")
    mig = ratio(rows, run_s)
    return {"table": "TOTAL*", "rows": rows, "mb": nbytes / 1e6, "migrate_rows_per_s": mig,
            "migrate_mb_per_s": ratio(nbytes / 1e6, run_s), "migrate_window_s": run_s,
            "ceiling_rows_per_s": ceil, "ceiling_mb_per_s": ratio(nbytes / 1e6, rows / ceil) if ceil else None,
            "naive_rows_per_s": naive, "naive_scaled": any(baselines[t]["naive"]["scaled"] for t in BENCH_TABLES),
            "row_by_row_rows_per_s": rbr, **_ratios(mig, ceil, naive, rbr)}


def _fmt(v, digits=0, suffix=""):
    if v is None:
        return "-"
    if isinstance(v, float) and digits:
        return f"{v:,.{digits}f}{suffix}"
    return f"{v:,.0f}{suffix}"


def render(summary: dict, header: str) -> str:
    """The human-readable table."""
    cols = ("table", "rows", "MB", "migrate r/s", "migrate MB/s", "ceiling r/s", "ceiling MB/s", "naive r/s",
            "row-by-row r/s", "mig/ceil", "mig/naive", "mig/rbr", "ceil/naive", "ceil/rbr")
    lines = [header, ""]
    body = []
    for r in summary["tables"]:
        body.append((r["table"], _fmt(r["rows"]), _fmt(r["mb"], 1), _fmt(r["migrate_rows_per_s"]),
                     _fmt(r["migrate_mb_per_s"], 1), _fmt(r["ceiling_rows_per_s"]), _fmt(r["ceiling_mb_per_s"], 1),
                     _fmt(r["naive_rows_per_s"]) + ("~" if r["naive_scaled"] else ""),
                     _fmt(r["row_by_row_rows_per_s"]), _fmt(r["migrate_vs_ceiling"], 2, "x"),
                     _fmt(r["migrate_vs_naive"], 2, "x"), _fmt(r.get("migrate_vs_row_by_row"), 2, "x"),
                     _fmt(r.get("ceiling_vs_naive"), 2, "x"), _fmt(r.get("ceiling_vs_row_by_row"), 2, "x")))
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
    lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cols, widths))))
    lines.append("  ".join("-" * w for w in widths))
    for b in body:
        lines.append("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(b, widths))))
    m = summary["migrate"]
    lines += ["",
              "* TOTAL = chat + chat_message + message. migrate TOTAL uses the whole `migrate run` wall time (all "
              f"{_fmt(m['all_tables_rows'])} rows of all tables,",
              "  snapshot and plan included); per-table migrate rates use the observed load window of that table.",
              "~ naive rate measured on a prefix within the time budget and applied to the whole table.",
              "ceil/naive, ceil/rbr: the ceiling against the slower baselines, the most any migrator reaches against "
              "them on this server.",
              *(["with a vector store the run's wall time, TOTAL* and the CPU figures include the vector lane (loading "
                 "at once with the tables,", "  which also share the server with it): compare the whole run with the "
                 "ingest ceiling below instead."] if (summary.get("install") or {}).get("vectors") else []),
              "",
              f"migrate run   : {m['succeeded']}/{m['runs']} runs ok; median wall {_fmt(m['run_seconds'], 1, ' s')}, "
              f"peak RSS {_fmt(m['peak_rss_mb'], 0, ' MB')} (largest process; all processes together "
              f"{_fmt(m.get('peak_tree_rss_mb'), 0, ' MB')}), end-to-end {_fmt(m['end_to_end_rows_per_s'])} rows/s",
              "  phases (from its events): " + phases_text(m["phases_s"]),
              f"  peak RSS per process: {roles_text(m.get('rss_by_role'))}",
              f"migrate verify: median wall {_fmt(m['verify_seconds'], 1, ' s')}, peak RSS "
              f"{_fmt(m['verify_peak_rss_mb'], 0, ' MB')} (together {_fmt(m.get('verify_peak_tree_rss_mb'), 0, ' MB')})"
              f", exit 0 in {sum(m['verify_ok'])}/{len(m['verify_ok'])}",
              f"  peak RSS per process: {roles_text(m.get('verify_rss_by_role'))}"]
    return "\n".join(lines + render_install(summary.get("install")) + render_cpu(summary.get("cpu") or {}))


def phases_text(p: dict) -> str:
    """``before load 3.1 s (snapshot 1.0 s, plan 1.2 s), load 7.0 s (tables 1.2 s from +0.0 s, vectors 6.9 s from
    +0.1 s), finalize 2.0 s, after 0.1 s``; the parenthesised parts only when the run had vectors."""
    def part(k):
        return f"{k[:-2].replace('_', ' ')} {_fmt(p.get(k), 1, ' s')}"

    before = [part(k) for k in ("snapshot_s", "plan_s") if p.get(k) is not None]
    lanes = [f"{lane} {_fmt(p[lane + '_s'], 1, ' s')} from +{_fmt(p.get(lane + '_from_s'), 1, ' s')}"
             for lane in ("tables", "vectors") if p.get(lane + "_s") is not None]
    return ", ".join([part("before_load_s") + (f" ({', '.join(before)})" if before else ""),
                      part("load_s") + (f" ({', '.join(lanes)})" if lanes else ""), part("finalize_s"),
                      part("after_s")])


def roles_text(roles: dict | None) -> str:
    """``main 120 MB; 2 worker 210/198 MB; 1 resource_tracker 12 MB`` (both benches' per-process peak RSS)."""
    if not roles:
        return "-"
    order = sorted(roles, key=lambda r: (r != "main", r != "worker", r))
    return "; ".join(f"{r} {'/'.join(_fmt(x) for x in roles[r]['peaks_mb'])} MB" if r == "main" else
                     f"{roles[r]['count']} {r} " + "/".join(_fmt(x) for x in roles[r]["peaks_mb"])
                     + (" ..." if roles[r]["count"] > len(roles[r]["peaks_mb"]) else "") + " MB" for r in order)


def render_install(i: dict | None, top: int = 3) -> list[str]:
    """The whole install: the ingest ceiling, `migrate run` over it (issue 18's targets), the vector lane."""
    if not i:
        return []
    out = ["", "whole install (every table, document_chunk included):"]
    if i.get("ingest_error"):
        out.append(f"  ingest ceiling: FAILED ({i['ingest_error']})")
    elif i.get("ingest_ceiling_s") is not None:
        tables = sorted((i.get("ingest_tables") or {}).items(), key=lambda kv: -kv[1]["seconds"])
        rest = tables[top:]
        parts = [f"{t} {_fmt(v['seconds'], 1, ' s')}" for t, v in tables[:top]]
        if rest:
            parts.append(f"the other {len(rest)} {_fmt(sum(v['seconds'] for _, v in rest), 1, ' s')}")
        out += [f"  ingest ceiling (psql \\copy, text, 1 connection, into index-free copies of all {len(tables)} "
                f"tables): {_fmt(i['ingest_ceiling_s'], 1, ' s')} for {_fmt(i.get('ingest_rows'))} rows, "
                f"{_fmt((i.get('ingest_bytes') or 0) / 1e6, 0, ' MB')} of text",
                f"    {', '.join(parts)}",
                f"  migrate run, whole wall (median): {_fmt(i['run_s'], 1, ' s')} = "
                f"{_fmt(i['run_over_ingest'], 2, 'x')} the ingest ceiling (first run {_fmt(i['first_run_s'], 1, ' s')}"
                f" = {_fmt(i['first_run_over_ingest'], 2, 'x')}; issue 18's targets: <= 2x on stores like its A, "
                "<= 5x on thousands of tiny collections)"]
    if i.get("vectors"):
        out.append(f"  vectors: {_fmt(i['vectors'])} in a load window of {_fmt(i['vector_load_s'], 1, ' s')} "
                   f"({_fmt(i['vectors_per_s'])}/s); first vector start -> vector index built "
                   f"{_fmt(i['vector_load_and_indexes_s'], 1, ' s')} "
                   f"(index builds after the load {_fmt(i.get('index_builds_s'), 1, ' s')})")
    return out


def render_cpu(c: dict) -> list[str]:
    """Where the CPU went, and the wall time migrate's server work alone needs (empty off Linux)."""
    if c.get("migrate_busy_core_s") is None and c.get("ceiling_busy_core_s") is None:
        return []
    out = ["", f"CPU, core-seconds on {c.get('cores')} cores (server = machine busy minus the client's own CPU, so "
               "it includes anything else running):",
           f"  ceiling, 3 tables: wall {_fmt(c.get('ceiling_s'), 1, ' s')}, busy {_fmt(c.get('ceiling_busy_core_s'), 1)}"
           f" (client {_fmt(c.get('ceiling_client_core_s'), 1)}, server {_fmt(c.get('ceiling_server_core_s'), 1)})",
           f"  migrate run      : wall {_fmt(c.get('migrate_s'), 1, ' s')}, busy {_fmt(c.get('migrate_busy_core_s'), 1)}"
           f" (tool {_fmt(c.get('migrate_tool_core_s'), 1)}, server {_fmt(c.get('migrate_server_core_s'), 1)})"]
    if c.get("migrate_server_bound_s"):
        out.append(f"  migrate's server work alone (load, indexes, ANALYZE, ledger) needs "
                   f"{_fmt(c['migrate_server_bound_s'], 1, ' s')} on these cores: at most "
                   f"{_fmt(c.get('best_vs_ceiling_without_client'), 2, 'x')} of the ceiling even with a client that "
                   "costs nothing")
    return out


def write_json(path: Path, doc: dict) -> None:
    """Write the results document (floats rounded for readability)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_round(doc), indent=2, default=str) + "\n")


def _round(obj):
    if isinstance(obj, float):
        return round(obj, 4)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v) for v in obj]
    return obj
