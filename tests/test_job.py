"""The Kubernetes Job's exact steps, run locally: read-only data dir, non-root user, a pod that is killed, a retry.

Each container of deploy/kubernetes/job.yaml becomes `migrate <args>` (the image's ENTRYPOINT and the container's
args, read from the manifest), with the container's env, its volume mounts mapped to local directories, and
HridaAI's Secret standing in as DATABASE_URL. The data dir is a copy of the small fixture with every write bit
removed; as root the steps run as the unprivileged owner of the test server's socket, so the kernel enforces it.
Pod 1 is sent SIGTERM during the load (exit 75, retried by the Job); pod 2 starts with fresh scratch volumes, as a
retried pod does, and must finish the same run and verify it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from conftest import ROOT, SMALL, assert_no_secret, query, tree_digest
from migrator.errors import EXIT_TRANSIENT

JOB = ROOT / "deploy" / "kubernetes" / "job.yaml"
MIGRATE = Path(sys.executable).with_name("migrate")  # the console script, as the image's ENTRYPOINT
SETPRIV = ["setpriv", "--bounding-set", "-all,+dac_read_search", "--"]


def _steps() -> dict[str, dict]:
    spec = yaml.safe_load(JOB.read_text())["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}


class Runner:
    """How the steps are started so that the data dir is really read-only for them, as in the pod.

    Not root: as is (the write bits are gone). Root: as the unprivileged owner of the test server's socket when that
    user can execute this interpreter; otherwise as root without capabilities (setpriv: DAC is enforced, reading
    and traversing stay allowed so the server socket is reachable); else plain root (not enforced, said so).
    """

    def __init__(self, target_url: str):
        self.prefix: list[str] = []
        self.user: tuple[int, int] | None = None
        self.mode = "non-root" if os.geteuid() != 0 else "root, not enforced"
        if os.geteuid() == 0:
            host = parse_qs(urlsplit(target_url).query).get("host", [""])[0]
            st = os.stat(host) if host.startswith("/") else None
            user = (st.st_uid, st.st_gid) if st and st.st_uid != 0 else (65534, 65534)
            if self._works([], user):
                self.user, self.mode = user, f"uid {user[0]}"
            elif shutil.which("setpriv") and self._works(SETPRIV, None):
                self.prefix, self.mode = SETPRIV, "root without capabilities (setpriv)"

    @staticmethod
    def _works(prefix: list[str], user: tuple[int, int] | None) -> bool:
        extra = {"user": user[0], "group": user[1]} if user else {}
        try:
            return subprocess.run([*prefix, str(MIGRATE), "--version"], capture_output=True, cwd="/",
                                  env={"PATH": os.environ.get("PATH", ""), "HOME": "/tmp"}, **extra).returncode == 0
        except OSError:  # e.g. the interpreter lives under /root
            return False

    @property
    def enforced(self) -> bool:
        """True when the kernel refuses writes into the read-only copy for the steps."""
        return self.mode != "root, not enforced"

    def popen(self, argv: list[str], **kw) -> subprocess.Popen:
        extra = {"user": self.user[0], "group": self.user[1]} if self.user else {}
        return subprocess.Popen([*self.prefix, *argv], **kw, **extra)


class Pod:
    """One pod of the Job: fresh scratch volumes, the manifest's env, the steps run in order until one fails."""

    def __init__(self, root: Path, data: Path, target_url: str, runner: Runner):
        self.runner, self.target_url = runner, target_url
        self.mounts = {"data": data}
        for name in ("work", "tmp", "db-ca"):
            self.mounts[name] = root / name
            self.mounts[name].mkdir(parents=True)
            if runner.user:
                os.chown(self.mounts[name], *runner.user)

    def env(self, container: dict) -> dict:
        paths = {m["mountPath"]: str(self.mounts[m["name"]]) for m in container["volumeMounts"]}
        env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": self.target_url, "VECTOR_DB": "chroma"}
        for item in container["env"]:  # env wins over envFrom, as in Kubernetes
            env[item["name"]] = paths.get(item["value"], item["value"])
        return env

    def start(self, container: dict) -> subprocess.Popen:
        return self.runner.popen([str(MIGRATE), *container["args"]], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, cwd=self.mounts["work"], env=self.env(container))

    def run(self, container: dict) -> subprocess.CompletedProcess:
        proc = self.start(container)
        out, err = proc.communicate(timeout=300)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        assert_no_secret(["--work-dir", str(self.mounts["work"])], done)
        return done


@pytest.fixture
def job_root():
    """The pod's volumes live here, not under pytest's tmp_path: that is private to the user running pytest
    (/tmp/pytest-of-root is 0700), and the steps may run as another uid, as the Job's pod does."""
    base = Path(tempfile.mkdtemp(prefix="hm-job-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def readonly_data(job_root):
    data = job_root / "data"
    shutil.copytree(SMALL, data)
    for p in sorted(data.rglob("*"), reverse=True) + [data]:
        p.chmod((p.stat().st_mode | 0o444 | (0o111 if p.is_dir() else 0)) & ~0o222)  # readable by the pod's uid
    yield data
    for p in [data, *data.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)


def test_job_steps_with_a_killed_pod_then_a_retry(readonly_data, target_url, job_root):
    steps = _steps()
    assert list(steps) == ["config", "plan", "load", "tune-search", "verify"]
    before = tree_digest(readonly_data)
    runner = Runner(target_url)
    if runner.enforced:  # the copy is really read-only for the steps
        touch = runner.popen(["sh", "-c", f"touch {readonly_data}/x"], stderr=subprocess.DEVNULL)
        assert touch.wait(30) != 0
    pod1 = Pod(job_root / "pod1", readonly_data, target_url, runner)
    for name in ("config", "plan"):
        done = pod1.run(steps[name])
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    load = pod1.start(steps["load"])
    for line in load.stderr:  # JSON progress lines (stderr is not a terminal)
        if '"stage": "load"' in line:
            load.send_signal(signal.SIGTERM)  # the kubelet stopping the pod (eviction, drain, node shutdown)
            break
    out, err = load.communicate(timeout=120)
    assert load.returncode == EXIT_TRANSIENT, out + err
    assert query(target_url, "SELECT count(*) AS n FROM hridaai_migrate.run")[0]["n"] == 1

    pod2 = Pod(job_root / "pod2", readonly_data, target_url, runner)  # retried pod: new emptyDirs, new snapshot
    results = {}
    for name, container in steps.items():  # in order; a pod stops at the first failing container
        results[name] = pod2.run(container)
        assert results[name].returncode == 0, f"{name}: {results[name].stdout[-3000:]}{results[name].stderr[-3000:]}"
    assert "****@" in results["config"].stdout and "[env DATABASE_URL]" in results["config"].stdout
    assert ", resumed)" in results["load"].stdout  # the same run continued: the snapshot is content-addressed
    assert "all match" in results["verify"].stdout
    events = [json.loads(line) for line in results["load"].stderr.splitlines() if line.startswith("{")]
    assert any(e["stage"] == "load" and e.get("state") == "done" for e in events)
    assert query(target_url, "SELECT count(*) AS n FROM hridaai_migrate.run")[0]["n"] == 1
    assert tree_digest(readonly_data) == before
    assert sorted(p.name for p in readonly_data.iterdir()) == sorted(p.name for p in SMALL.iterdir())
    if runner.user:  # the snapshot and reports belong to the unprivileged user that wrote them
        assert (pod2.mounts["work"] / "snapshot").stat().st_uid == runner.user[0]
    print(f"Job steps ran as: {runner.mode}")


def test_job_without_a_target_fails_with_exit_2_not_an_embedded_server(readonly_data, tmp_path):
    first = _steps()["config"]
    pod = Pod(tmp_path / "pod", readonly_data, "", Runner(""))
    env = {k: v for k, v in pod.env(first).items() if k != "DATABASE_URL"}
    proc = subprocess.run([str(MIGRATE), *first["args"]], capture_output=True, text=True, env=env,
                          cwd=pod.mounts["work"], timeout=120)
    assert proc.returncode == 2 and "HRIDAAI_MIGRATE_REQUIRE_TARGET" in proc.stderr
    assert not any(pod.mounts["work"].iterdir())


CATCH_UP_JOB = ROOT / "deploy" / "kubernetes" / "catch-up" / "job.yaml"


def test_low_downtime_phase_1_job_then_the_catch_up_job_on_the_same_work_volume(readonly_data, target_url, job_root):
    """Phase 1: the base Job's steps with the work dir on a volume that outlives the pod (the overlay's PVC); HridaAI
    then writes to its database; phase 2: the catch-up Job's steps on the same work volume bring the target to the
    new state and verify it."""
    runner = Runner(target_url)
    pod1 = Pod(job_root / "pod1", readonly_data, target_url, runner)
    for name, container in _steps().items():
        done = pod1.run(container)
        assert done.returncode == 0, f"{name}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    for p in [readonly_data, *readonly_data.rglob("*")]:  # HridaAI writing meanwhile (as the data's owner)
        p.chmod(p.stat().st_mode | 0o200)
    db = sqlite3.connect(readonly_data / "hridaai.db")
    ids = [r[0] for r in db.execute("SELECT id FROM chat ORDER BY id")]
    db.execute("UPDATE chat SET title = 'renamed in the window' WHERE id = ?", (ids[0],))
    db.execute("DELETE FROM chat_message WHERE chat_id = ?", (ids[1],))
    db.execute("DELETE FROM chat WHERE id = ?", (ids[1],))
    db.commit()
    db.close()
    for p in sorted(readonly_data.rglob("*"), reverse=True) + [readonly_data]:
        p.chmod(p.stat().st_mode & ~0o222)
    spec = yaml.safe_load(CATCH_UP_JOB.read_text())["spec"]["template"]["spec"]
    steps = {c["name"]: c for c in spec["initContainers"] + spec["containers"]}
    assert list(steps) == ["config", "catch-up", "verify"]
    pod2 = Pod(job_root / "pod2", readonly_data, target_url, runner)
    pod2.mounts["work"] = pod1.mounts["work"]  # the PVC hridaai-migrate-work
    results = {name: pod2.run(c) for name, c in steps.items()}
    for name, done in results.items():
        assert done.returncode == 0, f"{name}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    assert "all match" in results["verify"].stdout
    assert query(target_url, "SELECT title FROM chat WHERE id = $1", ids[0])[0]["title"] == "renamed in the window"
    assert not query(target_url, "SELECT 1 FROM chat WHERE id = $1", ids[1])
    assert "caught up" in pod2.run({**steps["verify"], "args": ["status"]}).stdout
