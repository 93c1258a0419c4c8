"""The command line as a contract: subcommands and their documented options, `--version`, and the exit codes.

What is checked against what:
- every subcommand of the click group `migrator.cli.main` (nested groups included) answers `--help` in a real
  process and lists the flags README.md documents for it ("Commands" table, "Common flags" paragraph, choices);
- README's "## Exit codes" table = the EXIT_* constants of migrator/errors.py = what the Kubernetes Job's
  podFailurePolicy does with them (fail at once vs. retry);
- each exit code comes out of a real, cheap invocation, with the reason on stderr as one `ERROR:` line and a
  `HINT:` line, never a traceback (run_cli also fails a test whose output shows a test password).
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
import yaml

from conftest import MIGRATE, ROOT, SMALL, SUITE_PASSWORD, query, run_cli, tree_digest
from migrator import errors
from migrator.cli import main

README = (ROOT / "README.md").read_text()
JOB = ROOT / "deploy" / "kubernetes" / "job.yaml"


# README parsing

def readme_section(title: str) -> str:
    """The text of README's `## title` section."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the first markdown table in text (header and separator dropped)."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]
    return [r for r in rows[1:] if not set("".join(r)) <= set("-: ")]


def readme_exit_codes() -> dict[int, str]:
    """README's exit-code table: code -> meaning."""
    return {int(code): meaning for code, meaning in table_rows(readme_section("Exit codes"))}


def readme_commands() -> dict[str, set[str]]:
    """`migrate X [--flag]` cells of README's Commands table: command path -> flags written in the cell."""
    found: dict[str, set[str]] = {}
    for row in table_rows(readme_section("Commands")):
        for cell in re.findall(r"`migrate ([^`]+)`", row[0]):
            name = re.match(r"[a-z][a-z-]*(?: [a-z][a-z-]*)*", cell).group(0)
            found[name] = set(re.findall(r"--[a-z][a-z-]*", cell))
    return found


def readme_common_flags() -> dict[str, dict]:
    """README's "Common flags:" paragraph: flag -> {"choices": "a|b" or None, "only": {commands} or None}."""
    para = re.search(r"^Common flags:(.*?)(?:\n\n)", README, re.M | re.S).group(1)
    para = " ".join(para.split())
    flags = {}
    for flag, arg, after in re.findall(r"`(--[a-z][a-z-]*)((?: [^`]*)?)`([^`]*)", para):
        choices = re.fullmatch(r" ([a-z]+(?:\|[a-z]+)+)", arg)
        scope = re.match(r"\s*\(([a-z]+(?:/[a-z]+)+)[,)]", after)
        flags[flag] = {"choices": choices.group(1) if choices else None,
                       "only": set(scope.group(1).split("/")) if scope else None}
    return flags


# the click tree

def walk(group: click.Group, path: tuple[str, ...] = ()):
    """(path, command) for every subcommand, nested groups included."""
    for name, cmd in sorted(group.commands.items()):
        yield path + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from walk(cmd, path + (name,))


COMMANDS = {" ".join(path): cmd for path, cmd in walk(main)}
# Which subcommands work on a data dir / work dir / target and so take README's "Common flags"; the others take
# none. A new subcommand must be put in one of the two (the first test fails until it is).
TAKES_COMMON = {"snapshot", "plan", "run", "catch-up", "verify", "status", "config", "schema capture", "tune-search",
                "files"}
NO_FLAGS = {"policies", "schema", "schema list"}


def help_options(text: str) -> set[str]:
    """The long options a click --help screen lists."""
    return set(re.findall(r"^  (--[a-z][a-z-]*)", text, re.M))


def help_commands(text: str) -> set[str]:
    """The subcommands a click group's --help screen lists."""
    block = text.split("Commands:\n", 1)[1]
    return set(re.findall(r"^  ([a-z][a-z-]*)", block, re.M))


def test_every_subcommand_is_documented_and_classified():
    assert set(COMMANDS) == TAKES_COMMON | NO_FLAGS, "classify the new subcommand in TAKES_COMMON or NO_FLAGS"
    leaves = {name for name, cmd in COMMANDS.items() if not isinstance(cmd, click.Group)}
    assert set(readme_commands()) == leaves  # README's Commands table names each subcommand, and no other


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_lists_the_documented_options(name):
    proc = run_cli(*name.split(), "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.startswith("Usage:") and f" {name} " in proc.stdout.splitlines()[0], proc.stdout
    listed = help_options(proc.stdout)
    assert "--help" in listed
    common = readme_common_flags()
    assert {"--data-dir", "--work-dir", "--target", "--json", "--log-format", "--jobs"} <= set(common)
    expected = set(readme_commands().get(name, set()))
    if name in TAKES_COMMON:
        expected |= {flag for flag, doc in common.items() if doc["only"] is None or name in doc["only"]}
        for flag, doc in common.items():
            if doc["choices"]:  # e.g. --log-format [auto|text|json|none]: exactly README's choices
                assert f"{flag} [{doc['choices']}]" in proc.stdout, (flag, proc.stdout)
    scoped = {flag for flag, doc in common.items() if doc["only"] is not None and name not in doc["only"]}
    assert expected <= listed, f"`migrate {name} --help` lacks {sorted(expected - listed)}"
    assert not scoped & listed, f"`migrate {name}` takes {sorted(scoped & listed)}, documented for other commands"
    if name in NO_FLAGS:
        assert listed == {"--help"}, listed
    cmd = COMMANDS[name]
    if isinstance(cmd, click.Group):
        assert help_commands(proc.stdout) == set(cmd.commands), proc.stdout


def test_top_level_help_lists_every_command():
    proc = run_cli("--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert help_commands(proc.stdout) == set(main.commands)
    assert {"--version", "--help"} <= help_options(proc.stdout)


def test_version():
    version = importlib.metadata.version("hridaai-migrate")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert version == project["version"]
    assert project["scripts"]["migrate"] == "migrator.cli:main"
    script = [str(Path(sys.executable).with_name("migrate"))]  # the `migrate` entry point of this environment
    for argv, prog in ((script, "migrate"), (MIGRATE, "python -m migrator")):
        proc = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == f"{prog}, version {version}\n", proc.stdout


# the exit-code table

CONSTANTS = {name: value for name, value in vars(errors).items() if name.startswith("EXIT_")}
MEANING = {"EXIT_OK": "done", "EXIT_FATAL": "fatal", "EXIT_USAGE": "usage", "EXIT_DIFFERENCES": "verify found",
           "EXIT_PREFLIGHT": "preflight", "EXIT_TRANSIENT": "transient"}


def test_readme_exit_codes_are_the_constants():
    table = readme_exit_codes()
    assert set(CONSTANTS) == set(MEANING)  # a new EXIT_* constant needs a row in README (and here)
    assert set(table) == set(CONSTANTS.values())
    for name, word in MEANING.items():
        assert word in table[CONSTANTS[name]].lower(), (name, table[CONSTANTS[name]])
    assert "--resume" in table[errors.EXIT_TRANSIENT]
    # the exception types carry the codes the table gives their meaning
    assert errors.MigrationError.exit_code == errors.EXIT_FATAL
    assert errors.UsageError.exit_code == errors.EXIT_USAGE
    assert errors.VerificationFailed.exit_code == errors.EXIT_DIFFERENCES
    assert errors.PreflightError.exit_code == errors.EXIT_PREFLIGHT
    assert errors.TransientError.exit_code == errors.EXIT_TRANSIENT
    assert errors.WorkDirError.exit_code == errors.EXIT_FATAL


def pod_failure_action(rules: list[dict], code: int, container: str) -> str:
    """What Kubernetes does with a container's non-zero exit code: the first matching onExitCodes rule's action;
    no match = the default (the failed pod counts against backoffLimit and is retried)."""
    for rule in rules:
        on = rule.get("onExitCodes")
        if not on or on.get("containerName") not in (None, container):
            continue
        assert on["operator"] == "NotIn" or (on["operator"] == "In" and 0 not in on["values"]), rule  # k8s rules
        if (code in on["values"]) == (on["operator"] == "In"):
            return rule["action"]
    return "Count"


def test_job_pod_failure_policy_follows_the_exit_code_table():
    job = yaml.safe_load(JOB.read_text())
    spec = job["spec"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it
    rules = spec["podFailurePolicy"]["rules"]
    containers = [c["name"] for c in pod.get("initContainers", []) + pod["containers"]]
    assert containers == ["config", "plan", "load", "tune-search", "verify"]
    load = next(c for c in pod["initContainers"] if c["name"] == "load")
    assert load["args"] == ["run", "--resume"]  # a retried pod continues the ledger
    retried = {code for code, meaning in readme_exit_codes().items() if "--resume" in meaning}
    assert retried == {errors.EXIT_TRANSIENT}
    assert spec["backoffLimit"] >= 1
    for code in set(readme_exit_codes()) - {errors.EXIT_OK}:
        for container in containers:
            action = pod_failure_action(rules, code, container)
            if code in retried:
                assert action == "Count", (code, container, action)  # retried, bounded by backoffLimit
            else:
                assert action == "FailJob", (code, container, action)  # retrying cannot fix it


# each exit code, from a real invocation

def assert_exit(proc: subprocess.CompletedProcess, code: int, what: str = "", todo: str = "") -> None:
    """Exit `code`; for a failure exactly one ERROR line (with `what` in it or its DETAIL) then a HINT line
    (with `todo`), and no traceback anywhere."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    lines = proc.stderr.splitlines()
    errs = [i for i, line in enumerate(lines) if line.startswith("ERROR:")]
    hints = [i for i, line in enumerate(lines) if line.startswith("HINT:")]
    if code == errors.EXIT_OK:
        assert not errs and not hints, proc.stderr
        return
    assert len(errs) == 1, proc.stderr
    assert len(hints) == 1 and hints[0] > errs[0] and len(lines[hints[0]]) > len("HINT: ") + 10, proc.stderr
    assert what in "\n".join(lines[errs[0]:hints[0]]), proc.stderr
    assert todo in lines[hints[0]], proc.stderr
    assert "bug in hridaai-migrate" not in proc.stderr, proc.stderr


@pytest.fixture
def closed_port():
    """A local TCP port that refuses connections: bound, never listening (no other process can take it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def common(data, tmp_path, target: str) -> list[str]:
    return ["--data-dir", str(data), "--work-dir", str(tmp_path / "w"), "--target", target, "--log-format", "none"]


def test_exit_0_config_resolves_settings_without_connecting(closed_port, tmp_path, monkeypatch):
    for name in ("DATA_DIR", "DATABASE_URL", "HRIDAAI_MIGRATE_WORK_DIR", "HRIDAAI_MIGRATE_REQUIRE_TARGET"):
        monkeypatch.delenv(name, raising=False)
    target = f"postgresql://hridaai:{SUITE_PASSWORD}@127.0.0.1:{closed_port}/hridaai"
    proc = run_cli("config", "--data-dir", str(SMALL), "--target", target, "--log-format", "none", "--json")
    assert_exit(proc, errors.EXIT_OK)
    doc = json.loads(proc.stdout)["settings"]
    assert doc["data_dir"] == str(SMALL) and str(closed_port) in doc["target_url"]
    # README's documented defaults: --work-dir ./hridaai-migrate-work, --batch-rows 10000, --batch-bytes 8 MiB
    assert doc["work_dir"] == "hridaai-migrate-work"
    assert doc["batch_rows"] == 10000 and doc["batch_bytes"] == 8 * 1024 * 1024


def test_exit_2_data_dir_that_does_not_exist(tmp_path):
    proc = run_cli("snapshot", "--data-dir", str(tmp_path / "nowhere"), "--work-dir", str(tmp_path / "w"),
                   "--log-format", "none")
    assert_exit(proc, errors.EXIT_USAGE, "the data directory", "DATA_DIR")
    assert not (tmp_path / "w" / "snapshot").exists()


def test_exit_2_no_target_where_one_is_required(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    proc = run_cli("plan", "--data-dir", str(SMALL), "--work-dir", str(tmp_path / "w"), "--log-format", "none",
                   env={"HRIDAAI_MIGRATE_REQUIRE_TARGET": "true"})
    assert_exit(proc, errors.EXIT_USAGE, "no target database", "DATABASE_URL")
    assert not (tmp_path / "w").exists()  # refused before anything: no snapshot, no embedded server


@pytest.mark.parametrize("argv", [["--nope"], ["--orphans", "maybe"], ["--log-format", "xml"], ["--jobs", "two"]],
                         ids=["unknown-option", "bad-orphans", "bad-log-format", "bad-jobs"])
def test_exit_2_flags_click_refuses(argv, tmp_path):
    """Refused by click's own parser: click's `Error:` format (not ERROR/HINT), exit 2, a pointer to --help."""
    proc = run_cli("plan", "--data-dir", str(SMALL), "--work-dir", str(tmp_path / "w"), *argv)
    assert proc.returncode == errors.EXIT_USAGE, proc.stderr
    assert "Traceback" not in proc.stderr and "Error:" in proc.stderr and "--help" in proc.stderr, proc.stderr
    assert argv[0] in proc.stderr
    assert not (tmp_path / "w").exists()


POLICY_CASES = {
    "unknown-name": (["--policy", "no_such_policy=strip"], "no_such_policy"),
    "unknown-action": (["--policy", "json_nan=explode"], "explode"),
    "missing-equals": (["--policy", "json_nan"], "NAME=ACTION"),
}
@pytest.mark.parametrize("command", ["config", "plan"])
@pytest.mark.parametrize("case", list(POLICY_CASES))
def test_exit_2_bad_policy(case, command, target_url, tmp_path):
    """A wrong --policy is a configuration error: `config` (the Job's first step) refuses it, and `plan` refuses it
    before it snapshots anything."""
    argv, what = POLICY_CASES[case]
    proc = run_cli(command, *common(SMALL, tmp_path, target_url), *argv)
    assert_exit(proc, errors.EXIT_USAGE, what, "migrate policies")
    assert not (tmp_path / "w" / "snapshot").exists()


def test_exit_4_source_that_is_not_hridaai(target_url, tmp_path):
    import sqlite3

    data = tmp_path / "data"
    data.mkdir()
    db = sqlite3.connect(data / "hridaai.db")
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
    db.execute("INSERT INTO orders VALUES (1, 'tea')")
    db.commit()
    db.close()
    before = tree_digest(data)
    proc = run_cli("plan", *common(data, tmp_path, target_url))
    assert_exit(proc, errors.EXIT_PREFLIGHT, "source-not-hridaai", "DATA_DIR")
    assert "orders" in proc.stdout  # the plan report names what the source holds instead
    assert tree_digest(data) == before


def test_exit_4_run_into_a_target_holding_data(target_url, tmp_path):
    from test_bad_inputs import target_state
    from test_preflight import hridaai_made_target

    hridaai_made_target(target_url, signed_up=True)
    before = target_state(target_url)
    proc = run_cli("run", *common(SMALL, tmp_path, target_url))
    assert_exit(proc, errors.EXIT_PREFLIGHT, "target-holds-data", "--force-clear")
    assert target_state(target_url) == before  # refused before writing anything
    assert query(target_url, 'SELECT id FROM "user"')[0][0] == "first-admin"


@pytest.mark.parametrize("command", ["run", "status", "plan"])  # plan too: the Job retries 75, fails 4 at once
def test_exit_75_unreachable_target(command, closed_port, tmp_path):
    target = f"postgresql://hridaai:{SUITE_PASSWORD}@127.0.0.1:{closed_port}/hridaai"
    proc = run_cli(command, *common(SMALL, tmp_path, target))
    assert_exit(proc, errors.EXIT_TRANSIENT, "cannot reach the target PostgreSQL server", "--resume")
    assert f"127.0.0.1:{closed_port}" in proc.stderr  # where: the masked URL


def test_exit_3_verify_names_the_changed_table_and_key(target_url, tmp_path):
    args = common(SMALL, tmp_path, target_url)
    assert_exit(run_cli("run", *args), errors.EXIT_OK)
    assert_exit(run_cli("verify", *args), errors.EXIT_OK)  # the difference below is the only one
    chat_id = query(target_url, "SELECT id FROM chat ORDER BY id LIMIT 1")[0][0]
    query(target_url, "UPDATE chat SET title = title || ' (edited in the target)' WHERE id = $1", chat_id)
    proc = run_cli("verify", *args)
    assert_exit(proc, errors.EXIT_DIFFERENCES, "verify found", "verify.json")
    detail = next(line for line in proc.stderr.splitlines() if line.startswith("DETAIL:"))
    assert re.search(rf"(^DETAIL: |; )chat: 1 rows changed: [^;]*{re.escape(chat_id)}", detail), detail
