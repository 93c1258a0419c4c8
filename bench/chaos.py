"""Chaos: SIGKILL `migrate run` at every phase and at random moments, `run --resume` until it exits 0, then `verify`.

Each trial migrates into a fresh database and watches the JSON progress events `migrate run --log-format json`
prints on stderr (snapshot, plan, schema, load of a table or a collection, finalize steps).

- The first trials aim at each required kill point **deterministically**: the run is started with
  `HRIDAAI_MIGRATE_STOP_AT=<point>` (migrator/failpoints.py), so it stops itself (SIGSTOP) right after the first
  event of that phase, and is SIGKILLed there. No timer is involved, so a phase of a few milliseconds on a fast
  machine is hit as surely as a long one on a slow machine.
- The other trials wait for the event of the stage they aim at, sleep a random (seeded) delay and SIGKILL: extra
  coverage of moments inside the phases; which phase they end up in depends on the machine, so nothing requires it.

The kill point recorded is the last event seen before the kill, plus the ledger steps committed by then. Then it
resumes (exit 75 resumes again) until exit 0, and verify must exit 0: counts, checksums, vectors, no gap or repeat
in the ledger.

    python -m bench.chaos --trials 50 [--seed 7] [--jobs 2] [--data-dir fixtures/...] [--admin-url URL]

The CI-scale run is tests/test_chaos.py (marker `chaos`, CHAOS_TRIALS, default 10).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg

from migrator import failpoints

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "fixtures" / "hridaai-0.12.4-small"
MIGRATE = [sys.executable, "-m", "migrator"]
# kill points every run of trials must cover, in the order the pipeline passes them
REQUIRED = ("snapshot", "schema", "copy", "vectors", "index", "stamp")
assert set(REQUIRED) <= set(failpoints.POINTS)
AIMS = REQUIRED + ("plan", "copy", "vectors")
# longest random delay after the stage's first event (seconds): about the stage's length on the small fixture
MAX_DELAY = {"snapshot": 0.15, "plan": 2.0, "schema": 0.15, "copy": 1.5, "vectors": 1.5, "index": 0.3,
             "stamp": 0.0}
BATCH_ROWS = "20"  # small batches: the copy of the small fixture takes many committed batches
MAX_RESUMES = 6


@dataclass
class Trial:
    """One trial's record."""

    number: int
    aim: str
    delay: float
    paused: bool = False  # True: the run stops itself at the aim's first event (HRIDAAI_MIGRATE_STOP_AT)
    hit: str | None = None  # the stage of the last event seen before the kill (None: it finished first)
    steps_at_kill: list[str] = field(default_factory=list)
    batches_at_kill: int = 0
    resume_codes: list[int] = field(default_factory=list)
    verify_code: int | None = None
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Resumed to exit 0, verify exit 0, nothing else wrong."""
        return self.verify_code == 0 and not self.problems


def stage_of(event: dict) -> str | None:
    """The kill-point name of a progress event (the product's own failpoint names)."""
    return failpoints.point_of(event)


class Watcher:
    """Reads a process's stderr in a thread: every JSON event, the first time each stage was seen."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.last: str | None = None
        self.seen: dict[str, float] = {}
        self.text: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.text.append(line)
            try:
                stage = stage_of(json.loads(line))
            except ValueError:
                continue
            with self.changed:
                self.last = stage or self.last
                self.seen.setdefault(stage, time.monotonic())
                self.changed.notify_all()

    def wait_for(self, stage: str, timeout: float) -> bool:
        """True once `stage` was seen; False if the process ended (or the time ran out) first."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while stage not in self.seen:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    return False
                self.changed.wait(0.05)
        return True


def _args(data_dir: Path, work: Path, url: str, fmt: str) -> list[str]:
    return ["--data-dir", str(data_dir), "--work-dir", str(work), "--target", url, "--log-format", fmt,
            "--batch-rows", BATCH_ROWS]


def _run(args: list[str], outputs: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(MIGRATE + args, capture_output=True, text=True, cwd=ROOT, timeout=600)
    outputs += [proc.stdout, proc.stderr]
    return proc


def kill_at(trial: Trial, args: list[str], outputs: list[str]) -> None:
    """Start `migrate run`, SIGKILL it `trial.delay` seconds after the first event of `trial.aim` (a paused trial:
    the run has stopped itself right after that event, so the kill lands in that phase whatever the machine)."""
    env = dict(os.environ, **({failpoints.ENV: trial.aim} if trial.paused else {}))
    proc = subprocess.Popen(MIGRATE + ["run", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)
    watcher = Watcher(proc)
    if watcher.wait_for(trial.aim, timeout=300):
        time.sleep(trial.delay)
        with watcher.changed:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                trial.hit = watcher.last
    proc.wait()
    outputs.append("".join(watcher.text))
    if trial.hit is None and proc.returncode != 0:
        trial.problems.append(f"the run to be killed exited {proc.returncode} by itself")


async def _sql(url: str, sql: str) -> list:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


def sql(url: str, query: str) -> list:
    """Rows of one query."""
    return asyncio.run(_sql(url, query))


def ledger_state(url: str) -> tuple[list[str], int]:
    """(steps committed, batches committed) in the target's ledger; nothing when it does not exist yet."""
    if not sql(url, "SELECT to_regclass('hridaai_migrate.batch') IS NOT NULL")[0][0]:
        return [], 0
    steps = [r[0] for r in sql(url, "SELECT name FROM hridaai_migrate.step ORDER BY done_at, name")]
    return steps, sql(url, "SELECT count(*) FROM hridaai_migrate.batch")[0][0]


def ledger_problems(url: str) -> list[str]:
    """Batches numbered 1..n per unit (no gap, no repeat), every unit done, document_chunk ids unique."""
    out = []
    for unit, numbers in sql(url, "SELECT unit, array_agg(batch_no ORDER BY batch_no) FROM hridaai_migrate.batch "
                                  "GROUP BY unit"):
        if list(numbers) != list(range(1, len(numbers) + 1)):
            out.append(f"ledger of {unit}: batches {list(numbers)[:20]}")
    undone = sql(url, "SELECT unit FROM hridaai_migrate.unit WHERE NOT done AND total_rows > 0")
    out += [f"unit {r[0]} not done" for r in undone]
    if sql(url, "SELECT to_regclass('public.document_chunk') IS NOT NULL")[0][0]:
        n, distinct = sql(url, "SELECT count(*), count(DISTINCT id) FROM document_chunk")[0]
        out += [f"document_chunk: {n} rows, {distinct} ids"] if n != distinct else []
    return out


def resume_and_verify(trial: Trial, args: list[str], url: str, outputs: list[str]) -> None:
    """`run --resume` until exit 0 (75 means: again), then verify --json and the ledger checks."""
    for _ in range(MAX_RESUMES):
        code = _run(["run", "--resume", *args], outputs).returncode
        trial.resume_codes.append(code)
        if code != 75:
            break
    if trial.resume_codes[-1] != 0:
        trial.problems.append(f"run --resume exited {trial.resume_codes}: {outputs[-1][-600:]}")
        return
    verify = _run(["verify", "--json", *args], outputs)
    trial.verify_code = verify.returncode
    if verify.returncode != 0:
        trial.problems.append(f"verify exited {verify.returncode}: {verify.stderr[-600:]}")
    trial.problems += ledger_problems(url)


def run_trial(trial: Trial, *, admin_url: str, data_dir: Path, base: Path, secrets: set[str]) -> Trial:
    """One trial into a fresh database (dropped afterwards)."""
    t0 = time.monotonic()
    name = f"chaos_{trial.number}_{uuid.uuid4().hex[:6]}"
    sql(admin_url, f'CREATE DATABASE "{name}"')
    url = _with_db(admin_url, name)
    outputs: list[str] = []
    work = base / f"trial-{trial.number}"
    try:
        kill_at(trial, _args(data_dir, work, url, "json"), outputs)
        trial.steps_at_kill, trial.batches_at_kill = ledger_state(url)
        resume_and_verify(trial, _args(data_dir, work, url, "none"), url, outputs)
    finally:
        sql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)
    leaks = [s for s in secrets if any(s in text for text in outputs)]
    trial.problems += ["a secret appeared in the output"] if leaks else []
    trial.seconds = round(time.monotonic() - t0, 1)
    return trial


def _with_db(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


def plan_trials(n: int, seed: int, *, start: int = 0, aims: tuple[str, ...] = AIMS) -> list[Trial]:
    """n trials aiming in turn at every kill point, each with a seeded random delay."""
    rng = random.Random(seed + start)
    return [Trial(start + i, aims[i % len(aims)], round(rng.uniform(0, MAX_DELAY[aims[i % len(aims)]]), 3))
            for i in range(n)]


def paused_trials() -> list[Trial]:
    """One trial per required kill point, each stopped by the run itself at the phase's first event."""
    return [Trial(i, aim, 0.0, paused=True) for i, aim in enumerate(REQUIRED)]


def run_trials(n: int, *, seed: int, admin_url: str, data_dir: Path = SMALL, jobs: int = 2,
               base: Path | None = None, secrets: set[str] = frozenset()) -> dict:
    """max(n, len(REQUIRED)) trials, jobs at a time: one paused at each required kill point, the rest at random
    moments; the summary."""
    base = base or Path(tempfile.mkdtemp(prefix="hm-chaos-"))
    run = lambda t: run_trial(t, admin_url=admin_url, data_dir=data_dir, base=base, secrets=secrets)  # noqa: E731
    paused = paused_trials()
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        trials = list(pool.map(run, paused + plan_trials(max(0, n - len(paused)), seed, start=len(paused))))
    return summary(trials)


def summary(trials: list[Trial]) -> dict:
    """Figures for people and for the test: trials, kill points covered, resumes, verify results."""
    hits: dict[str, int] = {}
    for t in trials:
        hits[t.hit or "finished-before-kill"] = hits.get(t.hit or "finished-before-kill", 0) + 1
    return {"trials": len(trials), "killed": sum(t.hit is not None for t in trials), "kill_points": hits,
            "required_covered": sorted(set(REQUIRED) & set(hits)),
            "required_missing": sorted(set(REQUIRED) - set(hits)),
            "paused_missed": [f"{t.aim} (hit {t.hit})" for t in trials if t.paused and t.hit != t.aim],
            "resumes": sum(len(t.resume_codes) for t in trials),
            "resumes_exit_75": sum(c == 75 for t in trials for c in t.resume_codes),
            "verify_passed": sum(t.verify_code == 0 for t in trials),
            "ok": sum(t.ok for t in trials), "failed": [asdict(t) for t in trials if not t.ok],
            "trial_log": [asdict(t) for t in trials]}


def format_summary(s: dict) -> str:
    """The summary as a few lines."""
    points = ", ".join(f"{k} {v}" for k, v in sorted(s["kill_points"].items()))
    lines = [f"chaos: {s['trials']} trials, {s['killed']} killed by SIGKILL",
             f"kill points hit: {points}",
             f"required kill points covered: {len(s['required_covered'])}/{len(REQUIRED)}"
             + (f" (missing: {', '.join(s['required_missing'])})" if s["required_missing"] else ""),
             "paused trials that died elsewhere than aimed: " + (", ".join(s["paused_missed"]) or "none"),
             f"resumes: {s['resumes']} (exit 75 and resumed again: {s['resumes_exit_75']})",
             f"verify: {s['verify_passed']}/{s['trials']} exit 0; trials fully ok: {s['ok']}/{s['trials']}"]
    for t in s["failed"]:
        lines.append(f"  FAILED trial {t['number']} (aim {t['aim']}, hit {t['hit']}): {t['problems'][:3]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.chaos`: the local, larger-scale chaos run (default 50 trials)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--seed", type=int, default=20260)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--data-dir", type=Path, default=SMALL)
    ap.add_argument("--admin-url", help="a superuser URL of a maintenance database (default: an embedded server started "
                                        "in a temporary directory)")
    ap.add_argument("--json", type=Path, help="also write the whole summary (every trial) to this file")
    a = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="hm-chaos-"))
    from bench import pgserver_ctl

    admin = a.admin_url or pgserver_ctl.start(base / "pg")
    try:
        s = run_trials(a.trials, seed=a.seed, admin_url=admin, data_dir=a.data_dir, jobs=a.jobs, base=base)
    finally:
        if not a.admin_url:
            pgserver_ctl.stop(base / "pg")
        shutil.rmtree(base, ignore_errors=True)
    print(format_summary(s))
    if a.json:
        a.json.write_text(json.dumps(s, indent=1))
    return 0 if s["ok"] == s["trials"] and not s["required_missing"] and not s["paused_missed"] else 1


if __name__ == "__main__":
    sys.exit(main())
