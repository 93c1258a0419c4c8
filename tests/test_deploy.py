"""deploy/: what can be checked without a Docker engine or a cluster.

Dockerfile: base, stages, user, entrypoint = the console script, every COPY source present and not docker-ignored,
and the package builds from exactly those paths. Lock: pins every dependency pyproject names, closed under their
requirements. Kubernetes: the Job validates against the API schemas of current releases (kubernetes-validate), and
its failure policy, security context and volumes say what the runbook promises.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from migrator import errors

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
K8S_VERSIONS = ["1.31.0", "1.34.0", "1.37.0"]  # podFailurePolicy is GA since 1.31


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(l for l in path.read_text().splitlines() if not l.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in text.splitlines()
            if line.strip()]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins, args in _instructions(DEPLOY / "Dockerfile"):
        if ins == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((ins, args))
    return stages


def test_dockerfile_two_stages_slim_python_311():
    args = dict(a.split("=", 1) for i, a in _instructions(DEPLOY / "Dockerfile") if i == "ARG")
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", args["PYTHON_IMAGE"])
    build, final = _stages()
    assert build[0][1] == "${PYTHON_IMAGE} AS build" and final[0][1] == "${PYTHON_IMAGE}"
    assert any("build-essential" in a for i, a in build if i == "RUN")
    final_text = " ".join(a for _, a in final)
    assert not re.search(r"build-essential|gcc|apt-get install|pip install", final_text)  # no compiler, no fetching
    assert [a for i, a in final if i == "COPY"] == ["--from=build /opt/migrate /opt/migrate"]


def test_final_image_runs_as_numeric_non_root_user():
    final = _stages()[-1]
    user = [a for i, a in final if i == "USER"][-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    job = _job()
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_entrypoint_is_the_console_script_declared_in_pyproject():
    final = _stages()[-1]
    entry = json.loads([a for i, a in final if i == "ENTRYPOINT"][-1])
    assert entry == ["migrate"]
    assert PYPROJECT["project"]["scripts"]["migrate"] == "migrator.cli:main"
    env = " ".join(a for i, a in final if i == "ENV")
    assert "PATH=/opt/migrate/bin:" in env and "HRIDAAI_MIGRATE_REQUIRE_TARGET=true" in env


def _copied_sources() -> list[str]:
    out = []
    for stage in _stages():
        for ins, args in stage:
            if ins == "COPY" and not args.startswith("--from"):
                out += args.split()[:-1]
    return out


def test_every_copy_source_exists_and_is_not_dockerignored():
    ignored = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
               if l.strip() and not l.startswith("#")]
    sources = _copied_sources()
    assert {"deploy/requirements.lock", "pyproject.toml", "README.md", "migrator", "schemas"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not any(fnmatch.fnmatch(src, pat) or src.startswith(pat + "/") for pat in ignored), src
    packages = PYPROJECT["tool"]["setuptools"]["packages"]
    dirs = {PYPROJECT["tool"]["setuptools"]["package-dir"].get(p, p.replace(".", "/")) for p in packages}
    assert all(any(d == s or d.startswith(s + "/") for s in sources) for d in dirs), dirs


def test_package_builds_from_exactly_the_copied_paths(tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for src in _copied_sources():
        if (ROOT / src).is_dir():
            shutil.copytree(ROOT / src, ctx / src, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (ctx / src).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / src, ctx / src)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "w"),
                           str(ctx)], capture_output=True, text=True, timeout=300)
    if proc.returncode and re.search(r"(?i)connection|network|resolve|index", proc.stderr):
        pytest.skip("building needs setuptools from the package index: " + proc.stderr[-200:])
    assert proc.returncode == 0, proc.stderr
    wheel = next((tmp_path / "w").glob("hridaai_migrate-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "migrator/cli.py" in names and any(re.fullmatch(r"migrator/schemas/\w+\.json", n) for n in names)
    packages = {str(p.relative_to(ROOT)) for p in (ROOT / "migrator").rglob("__init__.py")}
    assert packages <= set(names), f"packages missing from the wheel: {sorted(packages - set(names))}"
    assert re.search(r"^migrate = migrator\.cli:main$", entry, re.M)


def _lock() -> dict[str, str]:
    pins = {}
    for line in (DEPLOY / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[\w.+!-]+", version), f"not an exact pin: {line}"
            assert canonicalize_name(name) not in pins, f"pinned twice: {name}"
            pins[canonicalize_name(name)] = version
    return pins


def test_lock_pins_every_dependency_pyproject_names():
    pins = _lock()
    for spec in PYPROJECT["project"]["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} violates {spec}"
    for name in ("pytest", "hypothesis", "kubernetes-validate"):  # test tools stay out of the image
        assert name in str(PYPROJECT["project"]["optional-dependencies"]["test"]) and name not in pins


def test_lock_is_closed_under_requirements():
    """Every requirement of a pinned distribution (as installed here at that version) is pinned too."""
    pins, checked = _lock(), 0
    for name, version in pins.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.version != version:
            continue
        checked += 1
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                assert canonicalize_name(req.name) in pins, f"{name} needs {req.name}, which is not pinned"
    assert checked >= len(pins) // 2


# -- Kubernetes -------------------------------------------------------------------------------------------------

def _job() -> dict:
    return yaml.safe_load((DEPLOY / "kubernetes" / "job.yaml").read_text())


def _containers(job: dict) -> list[dict]:
    spec = job["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_job_validates_against_kubernetes_schemas(version):
    kv = pytest.importorskip("kubernetes_validate")
    kv.validate(_job(), version, strict=True)


def test_schema_validation_can_fail():
    kv = pytest.importorskip("kubernetes_validate")
    job = _job()
    job["spec"]["template"]["spec"]["restartPolicy"] = ["Never"]
    with pytest.raises(kv.ValidationError):
        kv.validate(job, K8S_VERSIONS[-1], strict=True)
    job = _job()
    job["spec"]["backofLimit"] = 3
    with pytest.raises(kv.ValidationError):
        kv.validate(job, K8S_VERSIONS[-1], strict=True)


def _job_action(job: dict, *, exit_code: int | None = None, condition: str | None = None) -> str:
    """What the Job controller does with a failed pod: the first matching rule, else count it against backoffLimit."""
    for rule in job["spec"]["podFailurePolicy"]["rules"]:
        if condition and any(c["type"] == condition for c in rule.get("onPodConditions", [])):
            return rule["action"]
        codes = rule.get("onExitCodes")
        if exit_code is not None and codes and (exit_code in codes["values"]) == (codes["operator"] == "In"):
            return rule["action"]
    return "Count"


def test_failure_policy_matches_the_exit_codes():
    job = _job()
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    for code in (errors.EXIT_FATAL, errors.EXIT_USAGE, errors.EXIT_DIFFERENCES, errors.EXIT_PREFLIGHT):
        assert _job_action(job, exit_code=code) == "FailJob", code
    for code in (errors.EXIT_TRANSIENT, 137, 143):  # drained SIGTERM, OOM kill, plain kill: retry with --resume
        assert _job_action(job, exit_code=code) == "Count", code
    assert _job_action(job, condition="DisruptionTarget", exit_code=errors.EXIT_FATAL) == "Ignore"
    assert 1 <= job["spec"]["backoffLimit"] <= 5
    assert job["spec"]["activeDeadlineSeconds"] >= 3600 and job["spec"]["ttlSecondsAfterFinished"] > 0


def test_job_steps_resume_and_verify_each_as_pid_1():
    job = _job()
    steps = [c.get("args") for c in _containers(job)]
    assert steps == [["config"], ["plan"], ["run", "--resume"], ["tune-search", "--when-not-owner", "print"],
                     ["verify"]]
    assert all("command" not in c for c in _containers(job))  # the image's ENTRYPOINT migrate, no shell: signals arrive
    grace = job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= 30


def test_pod_and_containers_are_locked_down():
    spec = _job()["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    for c in _containers(_job()):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc.get("privileged")
        assert set(c["resources"]["requests"]) == {"cpu", "memory"} and set(c["resources"]["limits"]) == {"cpu",
                                                                                                         "memory"}


def test_volumes_data_read_only_scratch_for_work_and_tmp():
    spec = _job()["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["readOnly"] is True
    assert "emptyDir" in volumes["work"] and "emptyDir" in volumes["tmp"]
    for c in _containers(_job()):
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert mounts["data"]["readOnly"] is True and mounts["data"]["mountPath"] == env["DATA_DIR"]
        assert mounts["work"]["mountPath"] == env["HRIDAAI_MIGRATE_WORK_DIR"] and mounts["tmp"]["mountPath"] == "/tmp"
        assert env["HRIDAAI_MIGRATE_REQUIRE_TARGET"] == "true"
        sources = [next(iter(s)) for s in c["envFrom"]]
        assert sources == ["configMapRef", "secretRef"]  # HridaAI's own configuration, unchanged


def test_kustomization_names_the_job_and_its_image():
    kust = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    assert kust["resources"] == ["job.yaml"]
    images = {c["image"].split(":")[0] for c in _containers(_job())}
    assert {i["name"] for i in kust["images"]} == images


def test_compose_override_mounts_data_read_only_and_keeps_secrets_in_env_files():
    doc = yaml.safe_load((DEPLOY / "compose.migrate.yaml").read_text())
    svc = doc["services"]["migrate"]
    assert svc["profiles"] == ["migrate"] and svc["image"].split(":")[0] == "hridaai-migrate"
    data = next(v for v in svc["volumes"] if v.split(":")[1] == svc["environment"]["DATA_DIR"])
    assert data.endswith(":ro")
    assert any(v.split(":")[1] == svc["environment"]["HRIDAAI_MIGRATE_WORK_DIR"] for v in svc["volumes"])
    assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"] and "/tmp" in svc["tmpfs"]
    assert svc["env_file"][-1] == "migrate.env" and "DATABASE_URL" not in svc["environment"]


def test_runbook_names_real_commands_files_and_exit_codes():
    from migrator.cli import main

    text = (DEPLOY / "RUNBOOK.md").read_text()
    used = set(re.findall(r"(?:run --rm migrate|-- migrate) (\w[\w-]*)", text))  # compose and kubectl exec lines
    assert {"config", "snapshot", "plan", "run", "verify", "status"} <= used <= set(main.commands), used
    for path in set(re.findall(r"\bdeploy/(?:kubernetes\b|[\w/.-]+\.\w+)", text)):  # not kubectl's deploy/NAME
        assert (ROOT / path).exists(), path
    codes = {int(c) for c in re.findall(r"^\| (\d+)\b", text, re.M)}
    assert codes - {137} == {errors.EXIT_FATAL, errors.EXIT_USAGE, errors.EXIT_DIFFERENCES, errors.EXIT_PREFLIGHT,
                             errors.EXIT_TRANSIENT}


# -- Kubernetes, low-downtime cutover: phase 1 overlay and the catch-up Job ---------------------------------------------

TARGET_SECRET = {"secretRef": {"name": "hridaai-migrate-target"}}


def _catch_up_job() -> dict:
    return yaml.safe_load((DEPLOY / "kubernetes" / "catch-up" / "job.yaml").read_text())


def _low_downtime() -> tuple[dict, dict]:
    """The overlay's kustomization and the base Job with its patch applied the way kustomize's strategic merge does
    for these fields (lists of named items merged by name, `null` deletes a key)."""
    kust = yaml.safe_load((DEPLOY / "kubernetes" / "low-downtime" / "kustomization.yaml").read_text())
    job = _job()
    [patch] = kust["patches"]
    assert patch["target"] == {"kind": "Job", "name": job["metadata"]["name"]}
    return kust, _merge(job, yaml.safe_load(patch["patch"]))


def _merge(base, patch):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = _merge(base[k], v) if k in base else v
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i
                                                                  for i in base + patch):
        by_name = {i["name"]: i for i in patch}
        assert set(by_name) <= {i["name"] for i in base}, f"the patch names items the base lacks: {sorted(by_name)}"
        return [_merge(i, by_name[i["name"]]) if i["name"] in by_name else i for i in base]
    return patch


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_low_downtime_manifests_validate_against_kubernetes_schemas(version):
    kv = pytest.importorskip("kubernetes_validate")
    kust, job = _low_downtime()
    kv.validate(job, version, strict=True)
    kv.validate(_catch_up_job(), version, strict=True)
    for resource in kust["resources"][1:]:
        kv.validate(yaml.safe_load((DEPLOY / "kubernetes" / "low-downtime" / resource).read_text()), version,
                    strict=True)


def test_phase_1_keeps_its_snapshot_on_the_pvc_the_catch_up_job_reads():
    kust, phase1 = _low_downtime()
    assert kust["resources"][0] == "../"
    pvc = yaml.safe_load((DEPLOY / "kubernetes" / "low-downtime" / "work-pvc.yaml").read_text())
    catch = _catch_up_job()
    for job in (phase1, catch):
        spec = job["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["work"] == {"name": "work", "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}}
        assert volumes["data"]["persistentVolumeClaim"] == _job()["spec"]["template"]["spec"]["volumes"][0][
            "persistentVolumeClaim"]  # the same data PVC, read-only
        for c in _containers(job):  # the target's own Secret, last: it wins over HridaAI's configuration
            assert c["envFrom"][:2] == _containers(_job())[0]["envFrom"] and c["envFrom"][-1] == TARGET_SECRET
    affinity = phase1["spec"]["template"]["spec"]["affinity"]["podAffinity"]
    assert affinity["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"
    # phase 2 runs with HridaAI at 0 replicas: a required affinity to its pod could never be scheduled
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in catch["spec"]["template"]["spec"]["affinity"][
        "podAffinity"]


def test_catch_up_job_is_the_base_job_with_its_own_steps():
    base, catch = _job(), _catch_up_job()
    assert [c.get("args") for c in _containers(catch)] == [["config"], ["catch-up"], ["verify"]]
    assert catch["metadata"]["name"] != base["metadata"]["name"]
    assert catch["spec"]["podFailurePolicy"] == base["spec"]["podFailurePolicy"]  # exit 4 (refused) fails at once
    for c in _containers(catch):
        assert all("command" not in c for c in _containers(catch))
        twin = next(b for b in _containers(base) if b["name"] in (c["name"], "load" if c["name"] == "catch-up" else ""))
        assert {k: v for k, v in c.items() if k not in ("name", "args", "envFrom")} == \
               {k: v for k, v in twin.items() if k not in ("name", "args", "envFrom")}, c["name"]
