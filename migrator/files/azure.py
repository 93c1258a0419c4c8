"""Azure Blob Storage, reached and named the way HridaAI's AzureStorageProvider does it: a BlobServiceClient of
AZURE_STORAGE_ENDPOINT with AZURE_STORAGE_KEY (the SDK takes a key string as the account's shared key, or a SAS
token) or else DefaultAzureCredential (managed identity; needs the azure-identity package); blobs of container
AZURE_STORAGE_CONTAINER_NAME named "<id>_<name>" (no prefix), recorded as ``<endpoint>/<container>/<name>``, read
back by the name after the last ``/``. No Content-Type is set (HridaAI's provider sets none).

Uploads stream in blocks of BLOCK_BYTES (a file above that is never read whole; one up to it is one PUT from
memory); the source bytes' SHA-256 travels as metadata. Staged blocks of an upload that was killed are dropped by
the service (uncommitted blocks expire), so nothing needs aborting.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError, \
    ServiceRequestError
from azure.storage.blob import BlobServiceClient

from migrator import failpoints
from migrator.errors import PreflightError, TransientError
from migrator.files.config import StorageConfig

BLOCK_BYTES = 8 << 20
READ_BYTES = 1 << 20
SHA256_META = "sha256"


class AzureStore:
    """One container of an Azure storage account (or Azurite); thread-safe clients."""

    def __init__(self, cfg: StorageConfig, *, timeout: float = 20.0):
        self.cfg = cfg
        credential = cfg.azure_key or _default_credential(cfg)
        self.service = BlobServiceClient(account_url=cfg.azure_endpoint, credential=credential,
                                         max_single_put_size=BLOCK_BYTES, max_block_size=BLOCK_BYTES,
                                         connection_timeout=timeout, read_timeout=timeout * 3, retry_total=3,
                                         retry_connect=2, initial_backoff=1, increment_base=2)  # not 15 s, 18 s ...
        self.container = self.service.get_container_client(cfg.azure_container)

    def describe(self) -> str:
        """For people and logs."""
        return self.cfg.describe()

    def key(self, name: str) -> str:
        """The blob name HridaAI gives the upload `name`."""
        return name

    def uri(self, key: str) -> str:
        """What HridaAI records in file.path for it."""
        return f"{self.cfg.azure_endpoint}/{self.cfg.azure_container}/{key}"

    @staticmethod
    def key_of_uri(uri: str) -> str:
        """The blob name HridaAI reads a recorded path back as (its get_file: after the last `/`)."""
        return uri.split("/")[-1]

    def check(self) -> None:
        """Before anything is written: the endpoint answers, the container exists, these credentials may write."""
        where = self.describe()
        try:
            try:
                self.container.get_container_properties()
            except HttpResponseError as exc:
                if _code(exc) != "AuthorizationPermissionMismatch":
                    raise
                next(iter(self.container.list_blobs(results_per_page=1)), None)  # a SAS that may list, not more
        except (ResourceNotFoundError, HttpResponseError, ClientAuthenticationError) as exc:
            raise _refused(exc, f"container {self.cfg.azure_container!r}", where) from None
        except ServiceRequestError as exc:
            raise _unreachable(exc, where) from None
        probe = self.container.get_blob_client(".hridaai-migrate-write-check")
        try:
            probe.upload_blob(b"", overwrite=True)
        except (HttpResponseError, ClientAuthenticationError) as exc:
            raise _refused(exc, "writing a blob", where, write=True) from None
        except ServiceRequestError as exc:
            raise _unreachable(exc, where) from None
        try:
            probe.delete_blob()
        except (HttpResponseError, ServiceRequestError):
            pass  # may write but not delete: harmless

    def abort_stale_uploads(self, keys: set[str]) -> int:
        """Nothing to do: the service drops a killed upload's uncommitted blocks itself."""
        return 0

    def listing(self) -> dict[str, int]:
        """name -> size of every blob in the container."""
        try:
            return {b.name: b.size for b in self.container.list_blobs()}
        except (HttpResponseError, ClientAuthenticationError) as exc:
            raise _refused(exc, "listing the container", self.describe()) from None
        except ServiceRequestError as exc:
            raise _unreachable(exc, self.describe()) from None

    def stat(self, key: str) -> tuple[int, str | None] | None:
        """(size, the SHA-256 we recorded or None) of an existing blob, else None."""
        try:
            props = self.container.get_blob_client(key).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return props.size, (props.metadata or {}).get(SHA256_META)

    def put_bytes(self, data: bytes, key: str, sha256: str) -> None:
        """One PUT of a small file's bytes."""
        self._upload(key, data, len(data), sha256)

    def put(self, path: Path, key: str, sha256: str) -> None:
        """Stream `path` to `key` in blocks."""
        with open(path, "rb") as f:
            self._upload(key, f, path.stat().st_size, sha256)

    def _upload(self, key: str, body, length: int, sha256: str) -> None:
        def progress(current: int, total: int | None) -> None:  # failpoint `upload`: blocks out, not committed
            if current:
                failpoints.reached({"stage": "files", "uploaded": current})
        try:
            self.container.get_blob_client(key).upload_blob(body, length=length, overwrite=True,
                                                            metadata={SHA256_META: sha256}, max_concurrency=4,
                                                            progress_hook=progress)
        except (HttpResponseError, ClientAuthenticationError) as exc:
            raise _refused(exc, f"writing {key!r}", self.describe(), write=True) from None
        except ServiceRequestError as exc:
            raise _unreachable(exc, self.describe()) from None

    def digest(self, key: str) -> tuple[int, str]:
        """(size, SHA-256) of the blob's bytes as the service returns them, streamed."""
        h, n = hashlib.sha256(), 0
        for chunk in self.container.get_blob_client(key).download_blob().chunks():
            h.update(chunk)
            n += len(chunk)
        return n, h.hexdigest()


def _default_credential(cfg: StorageConfig):
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise PreflightError("AZURE_STORAGE_KEY is not set, and DefaultAzureCredential needs the azure-identity "
                             "package", detail=cfg.describe(),
                             hint="set AZURE_STORAGE_KEY (the account key or a SAS token), or install azure-identity "
                                  "for managed identity") from None
    return DefaultAzureCredential()


def _code(exc: Exception) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _refused(exc: Exception, what: str, where: str, *, write: bool = False) -> PreflightError:
    code = _code(exc)
    if isinstance(exc, ResourceNotFoundError) or code in ("ContainerNotFound", "ResourceNotFound"):
        return PreflightError(f"the container {what.split()[-1]} does not exist", detail=where,
                              hint="create it (or fix AZURE_STORAGE_CONTAINER_NAME / AZURE_STORAGE_ENDPOINT); "
                                   "nothing was written")
    if isinstance(exc, ClientAuthenticationError) or code in ("AuthenticationFailed", "AuthorizationFailure"):
        return PreflightError(f"the storage account refused these credentials ({code or 'authentication'})",
                              detail=where, hint="check AZURE_STORAGE_KEY (the account key, or a SAS token that "
                                                 "has not expired)")
    if code in ("AuthorizationPermissionMismatch", "AuthorizationResourceTypeMismatch"):
        need = "write (w) and create (c)" if write else "read (r) and list (l)"
        return PreflightError(f"access denied {what} ({code})", detail=where,
                              hint=f"the key or SAS must allow {need} on the container")
    return PreflightError(f"the storage account refused {what}: {code or exc.__class__.__name__}", detail=where,
                          hint="see the service's message above")


def _unreachable(exc: Exception, where: str) -> TransientError:
    return TransientError(f"the object store does not answer: {exc.__class__.__name__}", detail=where,
                          hint="check AZURE_STORAGE_ENDPOINT and that the service is reachable from here; then run "
                               "again (nothing was lost: `migrate files` continues where it stopped)")
