"""Self-tests of ``--split-cpus`` (bench/cpuset.py) and of the per-process peak RSS of a child's tree
(bench/migrate_runner.py): ``pytest bench`` (no PostgreSQL needed)."""
from __future__ import annotations

import os
import sys

import pytest

from bench import cpuset, migrate_runner


def test_split_spec():
    assert cpuset.split_spec("auto", {0, 1}) == ({0}, {1})
    assert cpuset.split_spec("auto", {0, 1, 2}) == ({0, 1}, {2})
    assert cpuset.split_spec("0-1:2-3", {0, 1, 2, 3}) == ({0, 1}, {2, 3})
    assert cpuset.split_spec("1:0", {0, 1}) == ({1}, {0})
    for bad, avail in (("auto", {0}), ("0", {0, 1}), ("0:0", {0, 1}), ("0:5", {0, 1}), ("0:", {0, 1})):
        with pytest.raises(ValueError):
            cpuset.split_spec(bad, avail)
    assert cpuset.parse_list("0-2,5") == {0, 1, 2, 5} and cpuset.fmt({3, 1}) == "1,3"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux affinity")
def test_pin_tool_pins_every_thread_and_what_it_starts():
    import subprocess
    import threading

    before = os.sched_getaffinity(0)
    one = {min(before)}
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert cpuset.pin_tool(one)["threads"] >= 2
        assert os.sched_getaffinity(t.native_id) == one
        out = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                             capture_output=True, text=True, check=True).stdout
        assert out.strip() == str(sorted(one))
        assert cpuset.tree(os.getpid())[0] == os.getpid()
    finally:
        stop.set()
        t.join()
        cpuset.pin_tool(before)
    assert os.sched_getaffinity(0) == before
    with pytest.raises(ValueError):
        cpuset.postmaster_of(2 ** 22 + 12345)  # no such process here


def test_process_roles_and_peaks():
    recs = [{"pid": 10, "cmd": ["/v/bin/python", "/v/bin/migrate", "run"], "hwm_kb": 200 * 1024, "rss_kb": 150 * 1024},
            {"pid": 11, "cmd": ["python", "-c", "from multiprocessing.resource_tracker import main;main(8)"],
             "hwm_kb": 12 * 1024, "rss_kb": 12 * 1024},
            {"pid": 12, "cmd": ["python", "-c", "from multiprocessing.spawn import spawn_main; spawn_main()"],
             "hwm_kb": 0, "rss_kb": 90 * 1024},
            {"pid": 13, "cmd": ["python", "-c", "from multiprocessing.spawn import spawn_main; spawn_main()"],
             "hwm_kb": 70 * 1024, "rss_kb": 60 * 1024},
            {"pid": 14, "cmd": ["/usr/bin/taskset"], "hwm_kb": 1024, "rss_kb": 0}]
    procs = migrate_runner.per_process({"root_pid": 10, "per_process": recs})
    assert [(p["role"], p["peak_rss_mb"]) for p in procs] == [("main", 200.0), ("resource_tracker", 12.0),
                                                              ("worker", 90.0), ("worker", 70.0), ("taskset", 1.0)]
    roles = migrate_runner.rss_by_role(procs)
    assert roles["worker"] == {"count": 2, "max_mb": 90.0, "peaks_mb": [90.0, 70.0]}
    assert migrate_runner.per_process({"exit_code": 0}) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_run_child_reports_every_process(tmp_path):
    script = tmp_path / "t.py"
    script.write_text("import multiprocessing as mp, time\n"
                      "def f():\n    x = bytearray(60 << 20); time.sleep(0.7)\n"
                      "if __name__ == '__main__':\n"
                      "    ps = [mp.get_context('spawn').Process(target=f) for _ in range(2)]\n"
                      "    [p.start() for p in ps]; [p.join() for p in ps]\n")
    r = migrate_runner.run_child([sys.executable, str(script)], tmp_path / "c")
    assert r["ok"] and r["rss_by_role"]["main"]["count"] == 1
    assert r["rss_by_role"]["worker"]["count"] == 2 and r["rss_by_role"]["worker"]["max_mb"] > 60
    assert r["peak_tree_rss_mb"] >= r["rss_by_role"]["worker"]["max_mb"]
