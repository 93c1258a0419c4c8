"""A Google Cloud Storage emulator for the tests of `migrate files` with STORAGE_PROVIDER=gcs: `gcp-storage-emulator`
(PyPI) as a child process, in memory; clients reach it through STORAGE_EMULATOR_HOST, as HridaAI's would.

What it emulates, and what not: buckets, objects through the JSON API (simple, multipart and resumable uploads,
metadata, media downloads, listings), NotFound for missing buckets and objects. Not: authentication or IAM (any
credentials pass, so wrong or read-only credentials cannot be tested against it), throughput limits.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

from bench.s3server import free_port, stop, wait_answering

EMULATOR = Path(sys.executable).with_name("gcp-storage-emulator")


@contextlib.contextmanager
def server():
    """Yield the emulator's URL (the value for STORAGE_EMULATOR_HOST)."""
    port = free_port()
    proc = subprocess.Popen([str(EMULATOR), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_answering(proc, url + "/storage/v1/b", "the GCS emulator")
        yield url
    finally:
        stop(proc)


def bucket(url: str, name: str):
    """A Bucket (created) on the emulator, through a client of its own (this process's environment untouched)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": url})
    return client.create_bucket(name)
