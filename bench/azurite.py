"""Azurite (Microsoft's Azure Storage emulator, from the npm registry) as a child process, for the tests of
`migrate files` with STORAGE_PROVIDER=azure. `scripts/setup` installs it into `.tools/` (AZURITE_VERSION).

What it emulates, and what not: the Blob service's REST API (containers, block blobs with staged and committed
blocks, metadata, properties, listings), shared-key and SAS authorization with their error codes
(AuthorizationFailure, AuthorizationPermissionMismatch, ContainerNotFound). Not: Azure AD / managed identity
(DefaultAzureCredential), throughput limits, geo-replication, the 7-day expiry of uncommitted blocks.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.s3server import free_port, stop, wait_answering

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, in Microsoft's documentation): not a secret
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@contextlib.contextmanager
def server():
    """Yield the account URL (http://127.0.0.1:<port>/devstoreaccount1) of a fresh Azurite blob service."""
    if not BIN.exists():
        raise RuntimeError(f"Azurite is not installed at {BIN}: run scripts/setup (it needs npm)")
    port, data = free_port(), Path(tempfile.mkdtemp(prefix="azurite-"))
    proc = subprocess.Popen([str(BIN), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(data),
                             "--silent", "--skipApiVersionCheck", "--loose"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/{ACCOUNT}"
    try:
        wait_answering(proc, f"{url}?comp=list", "Azurite")
        yield url
    finally:
        stop(proc)
        shutil.rmtree(data, ignore_errors=True)


def container(url: str, name: str):
    """A ContainerClient (created) with the account key."""
    from azure.storage.blob import BlobServiceClient

    c = BlobServiceClient(account_url=url, credential=KEY).get_container_client(name)
    c.create_container()
    return c
