"""SQLCipher-encrypted sources (HridaAI 0.6.19-0.8.x with DATABASE_TYPE=sqlite+sqlcipher and DATABASE_PASSWORD).

The snapshot is a decrypted copy in the private work dir, so every later stage reads it like any other source.
A missing or wrong password is one clear error (exit 4), never a traceback or SQLCipher's own log noise.
"""

from __future__ import annotations

import json
import os

import pytest

import conftest
from conftest import SMALL, run_cli

PASSWORD = "it's a secret-" + os.urandom(4).hex()
getattr(conftest, "SECRETS", set()).add(PASSWORD)  # where run_cli checks outputs and work dirs for leaks


def encrypted_copy(dest, password: str) -> None:
    """hridaai.db encrypted with SQLCipher's defaults, as HridaAI's sqlcipher3 engine writes it."""
    sqlcipher3 = pytest.importorskip("sqlcipher3")
    dest.mkdir()
    plain = sqlcipher3.connect(str(SMALL / "hridaai.db"), isolation_level=None)
    try:
        plain.execute("ATTACH DATABASE ? AS enc KEY ?", (str(dest / "hridaai.db"), password))
        plain.execute("SELECT sqlcipher_export('enc')")
        plain.execute("DETACH DATABASE enc")
    finally:
        plain.close()
    assert not (dest / "hridaai.db").read_bytes().startswith(b"SQLite format 3")


def cipher_env(password: str | None) -> dict:
    env = {"DATABASE_TYPE": "sqlite+sqlcipher"}
    return env | ({"DATABASE_PASSWORD": password} if password is not None else {})


def test_encrypted_source_migrates_with_its_password(target_url, tmp_path):
    encrypted_copy(tmp_path / "data", PASSWORD)
    work = tmp_path / "w"
    common = ["--data-dir", str(tmp_path / "data"), "--work-dir", str(work), "--target", target_url,
              "--log-format", "none"]
    snap = run_cli("snapshot", *common, "--json", env=cipher_env(PASSWORD))
    assert snap.returncode == 0, snap.stderr
    manifest = json.loads(snap.stdout)
    assert manifest["source_revision"] == "0bd252b206fb" and manifest["row_counts"]["chat"] == 49
    assert (work / "snapshot" / "hridaai.db").read_bytes().startswith(b"SQLite format 3\x00")  # decrypted copy
    assert oct((work / "snapshot" / "hridaai.db").stat().st_mode & 0o777) == "0o600"
    run = run_cli("run", *common, env=cipher_env(PASSWORD))
    assert run.returncode == 0, run.stderr
    verify = run_cli("verify", *common, env=cipher_env(PASSWORD))
    assert verify.returncode == 0, verify.stdout[-2000:]


@pytest.mark.parametrize("password", ["wrong", None], ids=["wrong-password", "no-password"])
def test_wrong_or_missing_password_is_one_clear_error(tmp_path, password):
    encrypted_copy(tmp_path / "data", PASSWORD)
    snap = run_cli("snapshot", "--data-dir", str(tmp_path / "data"), "--work-dir", str(tmp_path / "w"),
                   env=cipher_env(password))
    assert snap.returncode == 4
    errors = [line for line in snap.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "Traceback" not in snap.stderr and "CORE" not in snap.stderr, snap.stderr
    if password is None:
        assert "encrypted (SQLCipher)" in errors[0] and "DATABASE_PASSWORD" in snap.stderr
    else:
        assert "cannot decrypt hridaai.db" in errors[0] and "DATABASE_PASSWORD" in snap.stderr
    assert not (tmp_path / "w" / "snapshot").exists()


def test_a_file_that_is_not_sqlite_names_sqlcipher(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "hridaai.db").write_bytes(os.urandom(8192))  # what an encrypted database looks like from outside
    snap = run_cli("snapshot", "--data-dir", str(data), "--work-dir", str(tmp_path / "w"))
    assert snap.returncode == 4
    assert "SQLCipher" in snap.stderr and "DATABASE_TYPE=sqlite+sqlcipher" in snap.stderr, snap.stderr
