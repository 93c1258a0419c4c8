"""Issue 19, STORAGE_PROVIDER=gcs: `migrate files` against a real GCS emulator (gcp-storage-emulator from PyPI,
reached through STORAGE_EMULATOR_HOST as HridaAI's client would be): objects named as HridaAI's GCS provider names
them, paths `gs://bucket/name`, read back by its rule, a resumable upload killed and resumed, verified; bad
settings refused before anything is written. The emulator checks no credentials, so wrong or read-only credentials
are not tested here (S3 and Azure cover those paths)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import uuid

import pytest

from bench import gcsserver
from conftest import MIGRATE, ROOT, file_digest, file_paths as _paths, installed as _installed, query, \
    read_back_by_hridaai, run_cli, stopped_at_failpoint


@pytest.fixture(scope="module")
def emulator():
    with gcsserver.server() as url:
        yield url


@pytest.fixture
def bucket(emulator):
    name = f"uploads-{uuid.uuid4().hex[:10]}"
    return name, gcsserver.bucket(emulator, name)


def _env(url: str, bucket: str, **extra) -> dict:
    return {"STORAGE_PROVIDER": "gcs", "GCS_BUCKET_NAME": bucket, "STORAGE_EMULATOR_HOST": url, **extra}


def _objects(bucket) -> dict[str, tuple[int, str]]:
    return {b.name: (b.size, hashlib.sha256(b.download_as_bytes()).hexdigest())
            for b in bucket.client.list_blobs(bucket.name)}


def test_uploads_move_to_gcs_as_hridaai_names_them_and_verify(tmp_path, target_url, emulator, bucket):
    name, b = bucket
    data, common = _installed(tmp_path, target_url)
    rows = _paths(target_url)
    env = _env(emulator, name)
    done = run_cli("files", *common, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    after = _paths(target_url)
    for file_id, old in rows.items():
        upload = old.rsplit("/", 1)[1]
        assert after[file_id] == f"gs://{name}/{upload}"
        blob = after[file_id].removeprefix("gs://").split("/")[1]  # HridaAI's get_file
        assert b.get_blob(blob).download_as_bytes() == (data / "uploads" / upload).read_bytes()
    md = next(p for p in after.values() if p.endswith(".md")).split("/")[-1]
    assert b.get_blob(md).content_type == "text/markdown"  # as upload_from_filename guesses it
    got = read_back_by_hridaai(env, list(after.values()), tmp_path / "hridaai-uploads")
    assert got == {after[i]: file_digest(data / "uploads" / p.rsplit("/", 1)[1]) for i, p in rows.items()}
    assert run_cli("verify", *common).returncode == 0
    check = run_cli("files", "--verify", *common, env=env)
    assert check.returncode == 0 and "RESULT: all match" in check.stdout, check.stdout[-2000:] + check.stderr[-2000:]
    again = run_cli("files", *common, env=env)
    assert again.returncode == 0 and "moved 0" in again.stdout and f"{len(rows)} done before" in again.stdout
    b.blob(md).upload_from_string(b"tampered")
    assert run_cli("files", "--verify", *common, env=env).returncode == 3


def test_killed_during_a_resumable_upload_then_again_gives_the_same_result(tmp_path, target_url, emulator, bucket):
    name, b = bucket
    data, common = _installed(tmp_path, target_url)
    rows = _paths(target_url)
    first = data / "uploads" / sorted(rows.items())[0][1].rsplit("/", 1)[1]
    first.write_bytes(os.urandom(20 << 20))  # 8 MiB chunks of a resumable session: some sent, not finalized
    env = {**os.environ, **_env(emulator, name), "HRIDAAI_MIGRATE_STOP_AT": "upload"}
    json_log = [a if a != "none" else "json" for a in common]
    proc = subprocess.Popen(MIGRATE + ["files", "--upload-workers", "1", *json_log], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    assert stopped_at_failpoint(proc, 120), "files ended before its first upload was under way"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _paths(target_url) == rows and not query(target_url, "SELECT 1 FROM hridaai_migrate.object")
    assert first.name not in _objects(b)
    again = run_cli("files", *common, env=_env(emulator, name))
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert _objects(b) == {f.name: (f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest())
                           for f in (data / "uploads").iterdir()}
    assert run_cli("files", "--verify", *common, env=_env(emulator, name)).returncode == 0


@pytest.mark.parametrize("case", ["no-bucket", "no-answer", "bad-credentials-json", "no-bucket-name"])
def test_bad_gcs_settings_are_refused_before_anything_is_written(tmp_path, target_url, emulator, bucket, case):
    name, b = bucket
    _, common = _installed(tmp_path, target_url)
    rows = _paths(target_url)
    env = {"no-bucket": _env(emulator, "no-such-bucket"),
           "no-answer": _env(f"http://127.0.0.1:{gcsserver.free_port()}", name),
           "bad-credentials-json": _env(emulator, name, GOOGLE_APPLICATION_CREDENTIALS_JSON="{not json"),
           "no-bucket-name": _env(emulator, "")}[case]
    done = run_cli("files", *common, env=env, timeout=300)
    code, words = {"no-bucket": (4, "does not exist"), "no-answer": (75, "does not answer"),
                   "bad-credentials-json": (2, "GOOGLE_APPLICATION_CREDENTIALS_JSON is not JSON"),
                   "no-bucket-name": (2, "GCS_BUCKET_NAME is not set")}[case]
    assert done.returncode == code and words in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert _paths(target_url) == rows and not query(target_url, "SELECT 1 FROM hridaai_migrate.object")
    assert not _objects(b)
