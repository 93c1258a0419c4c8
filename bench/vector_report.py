"""Turn the vector bench's raw measurements into the summary lines and the console table (``python -m
bench.vectors``; bench/report.py is the same for ``python -m bench``)."""
from __future__ import annotations

import os

from bench.report import median, ratio, roles_of, roles_text


def summarize(manifest: dict, base: dict, runs: list[dict]) -> dict:
    """Medians and ratios for the table and the JSON."""
    n = manifest["vectors"]
    ok = [r for r in runs if r["run"]["ok"]]
    read = (base.get("chroma_read") or {}).get("vectors_per_s")
    ceil = (base.get("ceiling") or {}).get("vectors_per_s")
    load_rate = median([r["run"]["vectors"].get("vectors_per_s") for r in ok])
    run_s = median([r["run"]["seconds"] for r in ok])
    ver = [r["verify"] for r in ok if r.get("verify")]
    ver_s = median([v["seconds"] for v in ver])
    lines = []

    def line(name, rate, seconds, note=""):
        lines.append({"name": name, "vectors_per_s": rate, "seconds": seconds, "vs_ceiling": ratio(rate, ceil),
                      "vs_chroma_read": ratio(rate, read), "note": note})

    ceiling = base.get("ceiling") or {}
    real = bool(ceiling.get("includes_indexes")) or manifest.get("profile") == "real"
    for key, name in (("chroma_read", "chromadb read (get, pages of 1000)"),
                      ("ceiling", f"ceiling: raw COPY, {ceiling.get('connections')} conn, + btree/GIN/vector index"
                       if real else f"ceiling: COPY prepared rows, {ceiling.get('connections')} conn, same DDL"),
                      ("ceiling_1_connection", "ceiling: 1 connection, same DDL"),
                      ("ceiling_pk_only", "ceiling: primary key only (no btree/GIN)")):
        if base.get(key):
            line(name, base[key]["vectors_per_s"], base[key]["seconds"])
        if key == "ceiling" and real:
            line("ceiling: its raw COPY alone (primary key only)", ceiling.get("copy_vectors_per_s"),
                 ceiling.get("copy_s"))
    if ok:
        line("migrate run: vector load window", load_rate,
             median([r["run"]["vectors"].get("load_window_s") for r in ok]), "read+convert+COPY, from its events")
        both_s = median([r["run"]["vectors"].get("load_and_secondary_s") for r in ok])
        line("migrate run: load + secondary indexes", ratio(n, both_s), both_s,
             "what the ceiling does: COPY with the btree/GIN indexes in place")
        if real:
            all_s = median([r["run"]["vectors"].get("load_and_indexes_s") for r in ok])
            line("migrate run: load + all indexes", ratio(n, all_s), all_s,
                 "what the real ceiling does: first vector start to the vector index built")
        line("migrate run: whole wall time", ratio(n, run_s), run_s, "snapshot, plan, load, index, analyze")
    if ver:
        line("migrate verify: wall time", ratio(n, ver_s), ver_s)
    phases = {k: median([r["run"]["vectors"].get("phases_s", {}).get(k) for r in ok])
              for k in ("before_vectors_s", "vector_load_s", "index_builds_s", "rest_of_finalize_s", "after_s")}
    return {"vectors": n, "collections": len(manifest["collections"]), "lines": lines,
            "migrate": {"runs": len(runs), "succeeded": len(ok), "run_seconds": run_s,
                        "vector_load_vectors_per_s": load_rate, "phases_s": phases,
                        "peak_rss_mb": median([r["run"]["peak_rss_mb"] for r in ok]),
                        "peak_tree_rss_mb": median([r["run"].get("peak_tree_rss_mb") for r in ok]),
                        "busy_core_s": median([r["run"].get("busy_core_s") for r in ok]),
                        "tool_core_s": median([r["run"].get("tool_core_s") for r in ok]),
                        "verify_seconds": ver_s, "verify_ok": [v["ok"] for v in ver],
                        "verify_peak_rss_mb": median([v["peak_rss_mb"] for v in ver]),
                        "verify_peak_tree_rss_mb": median([v.get("peak_tree_rss_mb") for v in ver]),
                        "recall_at_10": median([v["report"].get("recall_at_10") for v in ver]),
                        "self_retrieval": ver[0]["report"].get("self_retrieval") if ver else None,
                        "vs_ceiling": ratio(load_rate, ceil), "vs_chroma_read": ratio(load_rate, read),
                        "rss_by_role": roles_of([r["run"] for r in ok]),
                        "verify_rss_by_role": roles_of(ver)},
            "versus_ceiling": _versus(ceiling, run_s, ver_s, median(
                [r["run"]["vectors"].get("load_and_indexes_s") for r in ok])) if real else None}


def _versus(ceiling: dict, run_s, verify_s, vector_part_s) -> dict:
    """The real profile: migrate's times over the ceiling's (copy + indexes); ceiling/run is the issue's rate ratio."""
    c = ceiling.get("seconds")
    return {"ceiling_s": c, "ceiling_copy_s": ceiling.get("copy_s"),
            "ceiling_secondary_indexes_s": ceiling.get("secondary_indexes_s"),
            "ceiling_vector_index_s": ceiling.get("vector_index_s"),
            "ceiling_vector_index": ceiling.get("vector_index"),
            "run_s": run_s, "run_over_ceiling": ratio(run_s, c), "ceiling_over_run": ratio(c, run_s),
            "vector_part_s": vector_part_s, "vector_part_over_ceiling": ratio(vector_part_s, c),
            "verify_s": verify_s, "verify_over_ceiling": ratio(verify_s, c)}


def _fmt(v, digits=0, suffix=""):
    """A figure for the table, "-" when unknown; always ``digits`` decimals (report.py's prints integers without)."""
    if v is None:
        return "-"
    return f"{v:,.{digits}f}{suffix}"


def _cpu_line(m: dict) -> list[str]:
    """The run's CPU split like `python -m bench` prints it (nothing off Linux)."""
    busy, tool = m.get("busy_core_s"), m.get("tool_core_s")
    if busy is None or tool is None:
        return []
    return [f"  CPU: {_fmt(busy, 1)} busy core-seconds on {os.cpu_count()} cores: tool {_fmt(tool, 1)}, "
            f"server and the rest {_fmt(busy - tool, 1)}"]


def _versus_lines(v: dict | None) -> list[str]:
    """The real profile's run-over-ceiling block."""
    if not v or v.get("ceiling_s") is None:
        return []
    out = ["", f"ceiling (raw COPY + required index builds): {_fmt(v['ceiling_s'], 1)} s = COPY "
               f"{_fmt(v['ceiling_copy_s'], 1)} s + btree/GIN {_fmt(v['ceiling_secondary_indexes_s'], 1)} s + vector "
               f"index {_fmt(v['ceiling_vector_index_s'], 1)} s ({v.get('ceiling_vector_index')})"]
    if v.get("run_s") is not None:
        out.append(f"migrate run {_fmt(v['run_s'], 1)} s = {_fmt(v['run_over_ceiling'], 2)}x the ceiling's time "
                   f"(ceiling/run {_fmt(v['ceiling_over_run'], 2)}x; issue 18's target >= 0.7x); its vector part "
                   f"(first vector start -> vector index built) {_fmt(v['vector_part_s'], 1)} s = "
                   f"{_fmt(v['vector_part_over_ceiling'], 2)}x")
    if v.get("verify_s") is not None:
        out.append(f"migrate verify {_fmt(v['verify_s'], 1)} s = {_fmt(v['verify_over_ceiling'], 2)}x the ceiling's "
                   "time")
    return out


def render(summary: dict, header: str) -> str:
    """The human-readable table."""
    cols = ("", "vectors/s", "seconds", "÷ceiling", "÷chroma read")
    body = [(ln["name"], _fmt(ln["vectors_per_s"]), _fmt(ln["seconds"], 1), _fmt(ln["vs_ceiling"], 2, "x"),
             _fmt(ln["vs_chroma_read"], 2, "x")) for ln in summary["lines"]]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(cols)]
    out = [header, ""]
    out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cols, widths))))
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(b, widths))) for b in body]
    m = summary["migrate"]
    if m["runs"]:
        out += ["",
                f"migrate run   : {m['succeeded']}/{m['runs']} ok; median wall {_fmt(m['run_seconds'], 1, ' s')}, "
                f"peak RSS {_fmt(m['peak_rss_mb'], 0, ' MB')} (largest process; all processes together "
                f"{_fmt(m.get('peak_tree_rss_mb'), 0, ' MB')})",
                "  phases (from its events): " + ", ".join(
                    f"{k[:-2].replace('_', ' ')} {_fmt(v, 1, ' s')}" for k, v in m["phases_s"].items()),
                f"  peak RSS per process: {roles_text(m.get('rss_by_role'))}",
                *_cpu_line(m),
                f"migrate verify: wall {_fmt(m['verify_seconds'], 1, ' s')}, peak RSS "
                f"{_fmt(m['verify_peak_rss_mb'], 0, ' MB')} (together {_fmt(m.get('verify_peak_tree_rss_mb'), 0, ' MB')})"
                f", exit 0 in {sum(bool(x) for x in m['verify_ok'])}/"
                f"{len(m['verify_ok'])}, recall@10 {m['recall_at_10']}, self-retrieval {m['self_retrieval']}",
                f"  peak RSS per process: {roles_text(m.get('verify_rss_by_role'))}"]
    out += _versus_lines(summary.get("versus_ceiling"))
    out += ["",
            "÷ceiling / ÷chroma read: rate of the line divided by the (first) ceiling's / the chromadb read's.",
            "The vector load window runs from migrate's first `vector:` unit start event to its last done event;"]
    if summary.get("versus_ceiling"):
        out += ["the ceiling COPYs the generator's chunks into a primary-key-only table, then builds the btree/GIN",
                "and vector indexes, all timed; migrate's `load + all indexes` runs to its vector index event."]
    else:
        out += ["migrate builds the btree/GIN indexes after it (the ceiling COPYs with them in place), then the",
                "vector index, which the ceiling does not build at all."]
    return "\n".join(out)
