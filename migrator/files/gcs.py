"""Google Cloud Storage, reached and named the way HridaAI's GCSStorageProvider does it: a storage.Client from
GOOGLE_APPLICATION_CREDENTIALS_JSON (service account info) or else the default credentials (and, as for HridaAI,
STORAGE_EMULATOR_HOST when set); objects of GCS_BUCKET_NAME named "<id>_<name>" (no prefix), recorded as
``gs://<bucket>/<name>``, read back by the second `/`-separated part after ``gs://``. The content type is guessed
from the name, as the library does for HridaAI's ``upload_from_filename``.

A file below CHUNK_BYTES goes in one request from memory; a bigger one through a resumable upload in CHUNK_BYTES
chunks (never read whole). A killed resumable session expires by itself: nothing to abort.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

import requests
from google.api_core import exceptions as gexc
from google.auth.exceptions import DefaultCredentialsError
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from migrator import failpoints
from migrator.errors import PreflightError, TransientError
from migrator.files.config import StorageConfig

CHUNK_BYTES = 8 << 20
READ_BYTES = 1 << 20
SHA256_META = "sha256"
CHECK_SECONDS = 10
CHECK_RETRY = DEFAULT_RETRY.with_timeout(20)  # the preflight: 20 s of retries, not the library's 120
UNREACHABLE = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, gexc.ServiceUnavailable,
               gexc.RetryError)


class GCSStore:
    """One bucket of Google Cloud Storage (or an emulator)."""

    def __init__(self, cfg: StorageConfig):
        self.cfg = cfg
        try:
            self.client = (storage.Client.from_service_account_info(info=cfg.gcs_credentials) if cfg.gcs_credentials
                           else storage.Client())
        except (DefaultCredentialsError, ValueError) as exc:
            raise PreflightError("no usable Google credentials for the bucket", detail=f"{cfg.describe()}: {exc}",
                                 hint="set GOOGLE_APPLICATION_CREDENTIALS_JSON to a service account key, or provide "
                                      "the default credentials (workload identity, GOOGLE_APPLICATION_CREDENTIALS)"
                                 ) from None
        self.bucket = self.client.bucket(cfg.bucket)

    def describe(self) -> str:
        """For people and logs."""
        return self.cfg.describe()

    def key(self, name: str) -> str:
        """The object name HridaAI gives the upload `name`."""
        return name

    def uri(self, key: str) -> str:
        """What HridaAI records in file.path for it."""
        return "gs://" + self.cfg.bucket + "/" + key

    @staticmethod
    def key_of_uri(uri: str) -> str:
        """The object name HridaAI reads a recorded path back as (its get_file)."""
        return uri.removeprefix("gs://").split("/")[1]

    def check(self) -> None:
        """Before anything is written: the endpoint answers, the bucket exists, these credentials may write."""
        where = self.describe()
        try:
            self.bucket.reload(timeout=CHECK_SECONDS, retry=CHECK_RETRY)
            probe = self.bucket.blob(".hridaai-migrate-write-check")
            probe.upload_from_string(b"", timeout=CHECK_SECONDS, retry=CHECK_RETRY)
        except gexc.GoogleAPICallError as exc:
            raise _refused(exc, where) from None
        except UNREACHABLE as exc:
            raise _unreachable(exc, where) from None
        try:
            probe.delete()
        except (gexc.GoogleAPICallError, *UNREACHABLE):
            pass  # may write but not delete: harmless

    def abort_stale_uploads(self, keys: set[str]) -> int:
        """Nothing to do: a killed resumable session expires by itself."""
        return 0

    def listing(self) -> dict[str, int]:
        """name -> size of every object in the bucket."""
        try:
            return {b.name: b.size for b in self.client.list_blobs(self.cfg.bucket)}
        except gexc.GoogleAPICallError as exc:
            raise _refused(exc, self.describe()) from None
        except UNREACHABLE as exc:
            raise _unreachable(exc, self.describe()) from None

    def stat(self, key: str) -> tuple[int, str | None] | None:
        """(size, the SHA-256 we recorded or None) of an existing object, else None."""
        blob = self.bucket.get_blob(key)
        return None if blob is None else (blob.size, (blob.metadata or {}).get(SHA256_META))

    def _blob(self, key: str, sha256: str) -> storage.Blob:
        blob = self.bucket.blob(key, chunk_size=CHUNK_BYTES)
        blob.metadata = {SHA256_META: sha256}
        return blob

    def put_bytes(self, data: bytes, key: str, sha256: str) -> None:
        """One request with a small file's bytes."""
        try:
            self._blob(key, sha256).upload_from_string(data, content_type=_content_type(key))
        except gexc.GoogleAPICallError as exc:
            raise _refused(exc, self.describe()) from None
        except UNREACHABLE as exc:
            raise _unreachable(exc, self.describe()) from None

    def put(self, path: Path, key: str, sha256: str) -> None:
        """A resumable upload of `path` in CHUNK_BYTES chunks."""
        sent = 0
        try:
            with open(path, "rb") as src, self._blob(key, sha256).open(
                    "wb", chunk_size=CHUNK_BYTES, content_type=_content_type(key)) as out:
                while chunk := src.read(CHUNK_BYTES):
                    out.write(chunk)
                    sent += len(chunk)
                    if sent > CHUNK_BYTES:  # failpoint `upload`: chunks sent, the object not finalized
                        failpoints.reached({"stage": "files", "uploaded": sent})
        except gexc.GoogleAPICallError as exc:
            raise _refused(exc, self.describe()) from None
        except UNREACHABLE as exc:
            raise _unreachable(exc, self.describe()) from None

    def digest(self, key: str) -> tuple[int, str]:
        """(size, SHA-256) of the object's bytes as the service returns them, streamed."""
        import hashlib

        h, n = hashlib.sha256(), 0
        with self.bucket.blob(key).open("rb", chunk_size=READ_BYTES) as f:
            while chunk := f.read(READ_BYTES):
                h.update(chunk)
                n += len(chunk)
        return n, h.hexdigest()


def _content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _refused(exc: Exception, where: str) -> PreflightError:
    if isinstance(exc, gexc.NotFound):
        return PreflightError(f"the bucket does not exist ({exc.code})", detail=where,
                              hint="create it (or fix GCS_BUCKET_NAME); nothing was written")
    if isinstance(exc, gexc.Unauthorized):
        return PreflightError("Google Cloud Storage refused these credentials", detail=where,
                              hint="check GOOGLE_APPLICATION_CREDENTIALS_JSON (or the default credentials)")
    if isinstance(exc, gexc.Forbidden):
        return PreflightError("access denied to the bucket", detail=f"{where}: {exc.message}",
                              hint="grant the service account storage.objects.create / get / list on the bucket")
    return PreflightError(f"Google Cloud Storage refused the request: {exc.__class__.__name__}",
                          detail=f"{where}: {getattr(exc, 'message', exc)}")


def _unreachable(exc: Exception, where: str) -> TransientError:
    return TransientError(f"the object store does not answer: {exc.__class__.__name__}", detail=where,
                          hint="check the network (and STORAGE_EMULATOR_HOST if set); then run again (nothing was "
                               "lost: `migrate files` continues where it stopped)")
