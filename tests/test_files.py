"""Issue 19: `migrate files` moves uploads/ to an S3-compatible store (a real moto server started here), rewrites
file.path to the URI HridaAI's S3 provider records, is resumable and exactly once, verifies every object's bytes,
and refuses bad settings before writing anything."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import uuid

import pytest

from bench import s3server
from conftest import MIGRATE, ROOT, SECRETS, file_digest, file_paths as _paths, installed as _installed, query, \
    read_back_by_hridaai, run_cli, stopped_at_failpoint, tree_digest

PREFIX = "hridaai/uploads"


@pytest.fixture(scope="module")
def s3_url():
    with s3server.server() as url:
        yield url


@pytest.fixture
def bucket(s3_url):
    name = f"uploads-{uuid.uuid4().hex[:12]}"
    s3server.client(s3_url).create_bucket(Bucket=name)
    return name


def _env(s3_url: str, bucket: str, **extra) -> dict:
    secret = "secret-" + uuid.uuid4().hex[:8]
    SECRETS.add(secret)
    return {"STORAGE_PROVIDER": "s3", "S3_BUCKET_NAME": bucket, "S3_ENDPOINT_URL": s3_url,
            "S3_REGION_NAME": s3server.REGION, "S3_KEY_PREFIX": PREFIX, "S3_ACCESS_KEY_ID": "testing",
            "S3_SECRET_ACCESS_KEY": secret, "S3_ADDRESSING_STYLE": "path", **extra}


def _objects(s3_url, bucket) -> dict[str, tuple[int, str]]:
    c = s3server.client(s3_url)
    out = {}
    for obj in c.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = c.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        out[obj["Key"]] = (len(body), hashlib.sha256(body).hexdigest())
    return out


def _read_back_as_hridaai(s3_url, bucket, path: str) -> bytes:
    """HridaAI's S3 provider reads a row's path back by its rule: the key is what follows the bucket after `//`."""
    key = "/".join(path.split("//")[1].split("/")[1:])
    return s3server.client(s3_url).get_object(Bucket=bucket, Key=key)["Body"].read()


def test_uploads_move_paths_are_rewritten_and_both_verifies_pass(tmp_path, target_url, s3_url, bucket):
    data, common = _installed(tmp_path, target_url)
    before = tree_digest(data)
    env = _env(s3_url, bucket)
    rows = _paths(target_url)
    assert rows and all(p.startswith("/app/backend/data/uploads/") for p in rows.values())  # the container's path
    done = run_cli("files", *common, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"moved {len(rows)}" in done.stdout
    after = _paths(target_url)
    for file_id, old in rows.items():
        name = old.rsplit("/uploads/", 1)[1]
        assert after[file_id] == f"s3://{bucket}/{PREFIX}/{name}"
        assert _read_back_as_hridaai(s3_url, bucket, after[file_id]) == (data / "uploads" / name).read_bytes()
    head = s3server.client(s3_url).head_object(Bucket=bucket, Key=f"{PREFIX}/{next(iter(rows.values())).rsplit('/', 1)[1]}")
    assert head["ContentType"] in ("text/markdown", "text/plain", "image/png")  # as HridaAI's provider sets it
    md = next(n for n in rows.values() if n.endswith(".md")).rsplit("/", 1)[1]
    assert s3server.client(s3_url).head_object(Bucket=bucket, Key=f"{PREFIX}/{md}")["ContentType"] == "text/markdown"
    assert tree_digest(data) == before  # the source is never written
    got = read_back_by_hridaai(env, list(after.values()), tmp_path / "hridaai-uploads")
    assert got == {after[i]: file_digest(data / "uploads" / p.rsplit("/", 1)[1]) for i, p in rows.items()}

    verify = run_cli("verify", *common)  # the rewritten paths are the ledger's, not differences
    assert verify.returncode == 0, verify.stdout[-3000:]
    check = run_cli("files", "--verify", *common, env=env)
    assert check.returncode == 0 and "RESULT: all match" in check.stdout, check.stdout[-3000:] + check.stderr[-2000:]
    again = run_cli("files", *common, env=env)  # idempotent: nothing sent, nothing rewritten
    assert again.returncode == 0 and f"{len(rows)} done before" in again.stdout and "moved 0" in again.stdout

    s3server.client(s3_url).put_object(Bucket=bucket, Key=f"{PREFIX}/{md}", Body=b"tampered")
    bad = run_cli("files", "--verify", *common, env=env)
    assert bad.returncode == 3 and "the object is 8 B" in bad.stdout, bad.stdout[-2000:]


def test_a_missing_upload_stops_before_writing_or_is_reported_by_id(tmp_path, target_url, s3_url, bucket):
    data, common = _installed(tmp_path, target_url)
    rows = _paths(target_url)
    gone_id, gone_path = sorted(rows.items())[1]
    (data / "uploads" / gone_path.rsplit("/", 1)[1]).unlink()
    env = _env(s3_url, bucket)
    refused = run_cli("files", *common, env=env)
    assert refused.returncode == 4 and gone_id in refused.stderr and "--missing report" in refused.stderr
    assert _paths(target_url) == rows and not _objects(s3_url, bucket)  # nothing written anywhere
    reported = run_cli("files", "--missing", "report", *common, env=env)
    assert reported.returncode == 0 and gone_id in reported.stdout, reported.stdout[-2000:]
    after = _paths(target_url)
    assert after[gone_id] == gone_path and sum(p.startswith("s3://") for p in after.values()) == len(rows) - 1
    assert run_cli("verify", *common).returncode == 0
    check = run_cli("files", "--verify", *common, env=env)
    assert check.returncode == 0 and gone_id in check.stdout


def test_killed_during_an_upload_then_again_gives_the_same_result(tmp_path, target_url, s3_url, bucket):
    data, common = _installed(tmp_path, target_url)
    rows = _paths(target_url)
    first_id, first_path = sorted(rows.items())[0]
    big = data / "uploads" / first_path.rsplit("/", 1)[1]
    big.write_bytes(os.urandom(20 << 20))  # multipart (8 MiB parts): an upload under way has parts out, not all
    env = {**os.environ, **_env(s3_url, bucket), "HRIDAAI_MIGRATE_STOP_AT": "upload"}
    json_log = [a if a != "none" else "json" for a in common]
    proc = subprocess.Popen(MIGRATE + ["files", "--upload-workers", "1", *json_log], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    assert stopped_at_failpoint(proc, 120), "files ended before its first upload was under way"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _paths(target_url) == rows  # nothing committed
    assert not query(target_url, "SELECT 1 FROM hridaai_migrate.object")
    c = s3server.client(s3_url)
    stale = c.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["Key"] for u in stale] == [f"{PREFIX}/{big.name}"]  # the killed upload's parts are out there

    again = run_cli("files", "--resume", *common, env=_env(s3_url, bucket))
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert not c.list_multipart_uploads(Bucket=bucket).get("Uploads")  # aborted, not left to bill
    after = _paths(target_url)
    assert all(after[i] == f"s3://{bucket}/{PREFIX}/{p.rsplit('/', 1)[1]}" for i, p in rows.items())
    objects = _objects(s3_url, bucket)
    assert objects == {f"{PREFIX}/{f.name}": (f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest())
                       for f in (data / "uploads").iterdir()}
    assert len(query(target_url, "SELECT 1 FROM hridaai_migrate.object")) == len(rows)
    assert run_cli("files", "--verify", *common, env=_env(s3_url, bucket)).returncode == 0


@pytest.fixture(scope="module")
def auth_store():
    with s3server.server(auth=True) as url:
        users = s3server.auth_users(url, "auth-bucket")
        yield url, users


@pytest.mark.parametrize("case", ["provider-case", "no-bucket", "wrong-secret", "read-only", "no-answer"])
def test_bad_storage_settings_are_refused_before_anything_is_written(tmp_path, target_url, s3_url, auth_store, case):
    data, common = _installed(tmp_path, target_url)
    rows = _paths(target_url)
    url, users = auth_store
    env = {"provider-case": _env(s3_url, "any-bucket", STORAGE_PROVIDER="S3"),
           "no-bucket": _env(s3_url, "no-such-bucket-here"),
           "wrong-secret": _env(url, "auth-bucket", S3_ACCESS_KEY_ID=users["writer"][0]),
           "read-only": _env(url, "auth-bucket", S3_ACCESS_KEY_ID=users["reader"][0],
                             S3_SECRET_ACCESS_KEY=users["reader"][1]),
           "no-answer": _env(f"http://127.0.0.1:{s3server.free_port()}", "any-bucket")}[case]
    SECRETS.add(users["reader"][1])
    done = run_cli("files", *common, env=env)
    code, words = {"provider-case": (2, "is not a provider HridaAI accepts"), "no-bucket": (4, "does not exist"),
                   "wrong-secret": (4, "refused these credentials"), "read-only": (4, "s3:PutObject"),
                   "no-answer": (75, "does not answer")}[case]
    assert done.returncode == code and words in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert _paths(target_url) == rows
    assert not query(target_url, "SELECT 1 FROM hridaai_migrate.object")


def test_a_catch_up_then_files_again_carries_a_file_uploaded_since(tmp_path, target_url, s3_url, bucket):
    data, common = _installed(tmp_path, target_url)
    env = _env(s3_url, bucket)
    assert run_cli("files", *common, env=env).returncode == 0
    db = sqlite3.connect(data / "hridaai.db")
    cols = [r[1] for r in db.execute("PRAGMA table_info(file)") if r[1] not in ("id", "path")]
    src_id = db.execute("SELECT id FROM file ORDER BY id LIMIT 1").fetchone()[0]
    db.execute(f"INSERT INTO file (id, path, {', '.join(cols)}) SELECT 'new-file', "
               f"'/app/backend/data/uploads/new-file_notes.txt', {', '.join(cols)} FROM file WHERE id = ?", (src_id,))
    db.commit()
    db.close()
    (data / "uploads" / "new-file_notes.txt").write_text("uploaded between the bulk pass and the window\n")
    caught = run_cli("catch-up", *common)
    assert caught.returncode == 0, caught.stdout[-2000:] + caught.stderr[-2000:]
    assert run_cli("verify", *common).returncode == 0  # the other rows keep their URIs, the new one its local path
    moved = run_cli("files", *common, env=env)
    assert moved.returncode == 0 and "moved 1" in moved.stdout, moved.stdout[-2000:]
    assert _paths(target_url)["new-file"] == f"s3://{bucket}/{PREFIX}/new-file_notes.txt"
    assert run_cli("verify", *common).returncode == 0
    assert run_cli("files", "--verify", *common, env=env).returncode == 0


def test_an_object_already_stored_is_not_sent_again_and_a_wrong_one_is_replaced(tmp_path, target_url, s3_url, bucket):
    """A killed run may have stored objects whose rows it did not rewrite yet: the same bytes (size and recorded
    SHA-256) are kept, anything else at that key is overwritten."""
    data, common = _installed(tmp_path, target_url)
    rows = sorted(_paths(target_url).items())
    c = s3server.client(s3_url)
    same, other = (data / "uploads" / p.rsplit("/", 1)[1] for _, p in rows[:2])
    body = same.read_bytes()
    c.put_object(Bucket=bucket, Key=f"{PREFIX}/{same.name}", Body=body,
                 Metadata={"sha256": hashlib.sha256(body).hexdigest()})
    c.put_object(Bucket=bucket, Key=f"{PREFIX}/{other.name}", Body=b"x" * other.stat().st_size,
                 Metadata={"sha256": hashlib.sha256(body).hexdigest()})  # same size, other bytes
    done = run_cli("files", *common, env=_env(s3_url, bucket))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"moved {len(rows) - 1}" in done.stdout and "1 already stored" in done.stdout, done.stdout
    assert _objects(s3_url, bucket)[f"{PREFIX}/{other.name}"][1] == hashlib.sha256(other.read_bytes()).hexdigest()
    assert run_cli("files", "--verify", *common, env=_env(s3_url, bucket)).returncode == 0
