"""Issue 19, STORAGE_PROVIDER=azure: `migrate files` against a real Azurite (Microsoft's emulator, installed from the
npm registry by scripts/setup): blobs named as HridaAI's Azure provider names them, paths in its URL form, read
back by its rule, resumable, verified; bad settings refused before anything is written."""

from __future__ import annotations

import datetime
import hashlib
import os
import signal
import subprocess
import uuid

import pytest

from bench import azurite
from conftest import MIGRATE, ROOT, SECRETS, file_digest, file_paths as _paths, installed as _installed, query, \
    read_back_by_hridaai, run_cli, stopped_at_failpoint


@pytest.fixture(scope="module")
def account():
    with azurite.server() as url:
        yield url


@pytest.fixture
def container(account):
    name = f"uploads-{uuid.uuid4().hex[:10]}"
    return name, azurite.container(account, name)


def _env(url: str, container: str, **extra) -> dict:
    SECRETS.add(azurite.KEY)
    return {"STORAGE_PROVIDER": "azure", "AZURE_STORAGE_ENDPOINT": url, "AZURE_STORAGE_CONTAINER_NAME": container,
            "AZURE_STORAGE_KEY": azurite.KEY, **extra}


def _blobs(client) -> dict[str, tuple[int, str]]:
    out = {}
    for b in client.list_blobs():
        body = client.get_blob_client(b.name).download_blob().readall()
        out[b.name] = (len(body), hashlib.sha256(body).hexdigest())
    return out


def test_uploads_move_to_azure_in_hridaais_url_form_and_verify(tmp_path, target_url, account, container):
    name, client = container
    data, common = _installed(tmp_path, target_url)
    rows = _paths(target_url)
    env = _env(account, name)
    done = run_cli("files", *common, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    after = _paths(target_url)
    for file_id, old in rows.items():
        upload = old.rsplit("/", 1)[1]
        assert after[file_id] == f"{account}/{name}/{upload}"  # f"{endpoint}/{container}/{filename}"
        blob = after[file_id].split("/")[-1]  # HridaAI's get_file: the name after the last "/"
        assert client.get_blob_client(blob).download_blob().readall() == (data / "uploads" / upload).read_bytes()
    got = read_back_by_hridaai(env, list(after.values()), tmp_path / "hridaai-uploads")
    assert got == {after[i]: file_digest(data / "uploads" / p.rsplit("/", 1)[1]) for i, p in rows.items()}
    assert run_cli("verify", *common).returncode == 0
    check = run_cli("files", "--verify", *common, env=env)
    assert check.returncode == 0 and "RESULT: all match" in check.stdout, check.stdout[-2000:] + check.stderr[-2000:]
    again = run_cli("files", *common, env=env)
    assert again.returncode == 0 and "moved 0" in again.stdout and f"{len(rows)} done before" in again.stdout
    client.get_blob_client(next(iter(after.values())).split("/")[-1]).upload_blob(b"tampered", overwrite=True)
    assert run_cli("files", "--verify", *common, env=env).returncode == 3


def test_killed_during_a_block_upload_then_again_gives_the_same_result(tmp_path, target_url, account, container):
    name, client = container
    data, common = _installed(tmp_path, target_url)
    rows = _paths(target_url)
    first = data / "uploads" / sorted(rows.items())[0][1].rsplit("/", 1)[1]
    first.write_bytes(os.urandom(20 << 20))  # blocks of 8 MiB: staged, not committed, when killed
    env = {**os.environ, **_env(account, name), "HRIDAAI_MIGRATE_STOP_AT": "upload"}
    json_log = [a if a != "none" else "json" for a in common]
    proc = subprocess.Popen(MIGRATE + ["files", "--upload-workers", "1", *json_log], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    assert stopped_at_failpoint(proc, 120), "files ended before its first upload was under way"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _paths(target_url) == rows and not query(target_url, "SELECT 1 FROM hridaai_migrate.object")
    assert first.name not in _blobs(client)  # its blocks staged, the blob not committed
    again = run_cli("files", *common, env=_env(account, name))
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert _blobs(client) == {f.name: (f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest())
                              for f in (data / "uploads").iterdir()}
    assert run_cli("files", "--verify", *common, env=_env(account, name)).returncode == 0


@pytest.mark.parametrize("case", ["no-container", "wrong-key", "read-only-sas", "no-answer", "provider-case",
                                  "no-endpoint"])
def test_bad_azure_settings_are_refused_before_anything_is_written(tmp_path, target_url, account, container, case):
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    name, client = container
    _, common = _installed(tmp_path, target_url)
    rows = _paths(target_url)
    sas = generate_container_sas(azurite.ACCOUNT, name, account_key=azurite.KEY,
                                 permission=ContainerSasPermissions(read=True, list=True),
                                 expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1))
    SECRETS.add(sas)
    env = {"no-container": _env(account, "no-such-container"),
           "wrong-key": _env(account, name, AZURE_STORAGE_KEY=azurite.KEY[:-8] + "AAAAAAA="),
           "read-only-sas": _env(account, name, AZURE_STORAGE_KEY=sas),
           "no-answer": _env(f"http://127.0.0.1:{azurite.free_port()}/{azurite.ACCOUNT}", name),
           "provider-case": _env(account, name, STORAGE_PROVIDER="Azure"),
           "no-endpoint": _env("", name)}[case]
    done = run_cli("files", *common, env=env, timeout=300)
    code, words = {"no-container": (4, "does not exist"), "wrong-key": (4, "refused these credentials"),
                   "read-only-sas": (4, "write (w) and create (c)"), "no-answer": (75, "does not answer"),
                   "provider-case": (2, "is not a provider HridaAI accepts"),
                   "no-endpoint": (2, "AZURE_STORAGE_ENDPOINT and AZURE_STORAGE_CONTAINER_NAME must both be set")}[case]
    assert done.returncode == code and words in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert _paths(target_url) == rows and not query(target_url, "SELECT 1 FROM hridaai_migrate.object")
    assert not _blobs(client)
