"""An S3-compatible store, reached the way HridaAI's S3StorageProvider reaches it (boto3: region, endpoint, addressing
style, S3_ACCESS_KEY_ID/S3_SECRET_ACCESS_KEY or else the default AWS credential chain), and the key and URI it uses:
key = os.path.join(S3_KEY_PREFIX, "<id>_<name>"), recorded as ``s3://<bucket>/<key>``; HridaAI reads the key back as
everything after the bucket (its ``_extract_s3_key``).

Uploads stream from the file (boto3's managed transfer: multipart above MULTIPART_BYTES, parts of that size), never
held whole in memory. Each object carries the source bytes' SHA-256 as metadata (``x-amz-meta-sha256``): an object
already present with the same size and checksum is not sent again. Verify does not trust that metadata: it reads
the object back.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import posixpath
import uuid
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from migrator import failpoints
from migrator.errors import PreflightError, TransientError
from migrator.files.config import StorageConfig

MULTIPART_BYTES = 8 << 20
READ_BYTES = 1 << 20
SHA256_META = "sha256"


class S3Store:
    """One bucket (and key prefix) of an S3-compatible service; thread-safe (boto3 clients are)."""

    def __init__(self, cfg: StorageConfig, *, timeout: float = 20.0):
        self.cfg = cfg
        s3: dict = {"addressing_style": cfg.addressing_style} if cfg.addressing_style else {}
        config = Config(s3=s3, connect_timeout=timeout, read_timeout=timeout * 3,
                        retries={"max_attempts": 4, "mode": "standard"}, max_pool_connections=32,
                        request_checksum_calculation="when_required", response_checksum_validation="when_required")
        kw: dict = {"region_name": cfg.region, "endpoint_url": cfg.endpoint_url, "config": config}
        if cfg.access_key_id and cfg.secret_access_key:
            kw.update(aws_access_key_id=cfg.access_key_id, aws_secret_access_key=cfg.secret_access_key)
        self.client = boto3.client("s3", **kw)
        # boto3's defaults (parts read from the file as they are sent: memory does not follow the file's size)
        self.transfer = TransferConfig(multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES)

    def describe(self) -> str:
        """For people and logs: no secret."""
        return self.cfg.describe()

    @staticmethod
    def key_of_uri(uri: str) -> str:
        """The key HridaAI reads a recorded s3:// path back as (its _extract_s3_key: after the bucket)."""
        return "/".join(uri.split("//")[1].split("/")[1:])

    def key(self, name: str) -> str:
        """The object key HridaAI gives the upload `name` ("<id>_<filename>")."""
        return posixpath.join(self.cfg.key_prefix, name)

    def uri(self, key: str) -> str:
        """What HridaAI records in file.path for it."""
        return f"s3://{self.cfg.bucket}/{key}"

    def check(self) -> None:
        """Before anything is written: the endpoint answers, the bucket exists, these credentials may write to it
        (a small object written under the prefix and removed). PreflightError (exit 4) otherwise, named."""
        where = self.cfg.describe()
        try:
            try:
                self.client.head_bucket(Bucket=self.cfg.bucket)
            except ClientError as exc:
                if _code(exc) != "403":
                    raise
                # a HEAD has no body to name its reason: a listing does (and if the listing is allowed, the bucket
                # is there and readable; whether it is writable, the probe below tells)
                self.client.list_objects_v2(Bucket=self.cfg.bucket, MaxKeys=1)
        except ClientError as exc:
            raise _refused(exc, f"bucket {self.cfg.bucket!r}", where) from None
        except (EndpointConnectionError, BotoCoreError) as exc:
            raise _unreachable(exc, where) from None
        probe = self.key(f".hridaai-migrate-write-check-{uuid.uuid4().hex}")
        try:
            self.client.put_object(Bucket=self.cfg.bucket, Key=probe, Body=b"")
        except ClientError as exc:
            raise _refused(exc, f"writing {probe!r}", where, write=True) from None
        except BotoCoreError as exc:
            raise _unreachable(exc, where) from None
        try:
            self.client.delete_object(Bucket=self.cfg.bucket, Key=probe)
        except (ClientError, BotoCoreError):
            pass  # may write but not delete: harmless, HridaAI never deletes through us either

    def abort_stale_uploads(self, keys: set[str]) -> int:
        """Abort the unfinished multipart uploads of `keys` (a killed run's parts, which the store would keep and
        bill); how many."""
        aborted = 0
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.cfg.bucket, Prefix=self.cfg.key_prefix)
            for page in pages:
                for up in page.get("Uploads", []):
                    if up["Key"] in keys:
                        self.client.abort_multipart_upload(Bucket=self.cfg.bucket, Key=up["Key"],
                                                           UploadId=up["UploadId"])
                        aborted += 1
        except (ClientError, BotoCoreError):
            pass  # a store without the listing (or the right to it): parts expire by the bucket's lifecycle rules
        return aborted

    def listing(self) -> dict[str, int]:
        """key -> size of every object under the prefix (one paginated listing instead of a HEAD per file)."""
        out: dict[str, int] = {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.cfg.bucket,
                                                                              Prefix=self.cfg.key_prefix):
                out.update((o["Key"], o["Size"]) for o in page.get("Contents", []))
        except ClientError as exc:
            raise _refused(exc, f"listing {self.cfg.key_prefix!r}", self.cfg.describe()) from None
        except BotoCoreError as exc:
            raise _unreachable(exc, self.cfg.describe()) from None
        return out

    def stat(self, key: str) -> tuple[int, str | None] | None:
        """(size, the SHA-256 we recorded or None) of an existing object, else None."""
        try:
            head = self.client.head_object(Bucket=self.cfg.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise _refused(exc, f"reading {key!r}", self.cfg.describe()) from None
        return head["ContentLength"], head.get("Metadata", {}).get(SHA256_META)

    def put_bytes(self, data: bytes, key: str, sha256: str) -> None:
        """One PUT of a small file's bytes (below MULTIPART_BYTES: read once, hashed and sent from memory)."""
        extra = _extra(key, sha256)
        try:
            self.client.put_object(Bucket=self.cfg.bucket, Key=key, Body=data, **extra)
        except ClientError as exc:
            raise _refused(exc, f"writing {key!r}", self.cfg.describe(), write=True) from None
        except BotoCoreError as exc:
            raise _unreachable(exc, self.cfg.describe()) from None

    def put(self, path: Path, key: str, sha256: str) -> None:
        """Stream `path` to `key` (multipart when big), with HridaAI's content type and our checksum."""
        extra = _extra(key, sha256)
        sent = [0]

        def progress(n: int) -> None:  # the failpoint `upload`: part of the object is out, the rest is not
            sent[0] += n
            failpoints.reached({"stage": "files", "uploaded": sent[0]})
        try:
            self.client.upload_file(str(path), self.cfg.bucket, key, ExtraArgs=extra, Config=self.transfer,
                                    Callback=progress)
        except ClientError as exc:
            raise _refused(exc, f"writing {key!r}", self.cfg.describe(), write=True) from None
        except (BotoCoreError, OSError) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
                raise
            raise _unreachable(exc, self.cfg.describe()) from None

    def digest(self, key: str) -> tuple[int, str]:
        """(size, SHA-256) of the object's bytes as the store returns them, streamed."""
        body = self.client.get_object(Bucket=self.cfg.bucket, Key=key)["Body"]
        h, n = hashlib.sha256(), 0
        for chunk in body.iter_chunks(READ_BYTES):
            h.update(chunk)
            n += len(chunk)
        return n, h.hexdigest()


def _extra(key: str, sha256: str) -> dict:
    extra: dict = {"Metadata": {SHA256_META: sha256}}
    content_type = content_type_of(key)
    if content_type:
        extra["ContentType"] = content_type
    return extra


def content_type_of(name: str) -> str | None:
    """The Content-Type HridaAI's S3 provider sets: text/markdown for .md/.markdown, else mimetypes' guess."""
    if os.path.splitext(name)[1].lower() in (".md", ".markdown"):
        return "text/markdown"
    return mimetypes.guess_type(name)[0]


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _refused(exc: ClientError, what: str, where: str, *, write: bool = False) -> PreflightError:
    code = _code(exc)
    if code in ("404", "NoSuchBucket", "NotFound"):
        return PreflightError(f"the bucket {what.split()[-1]} does not exist", detail=where,
                              hint="create it (or fix S3_BUCKET_NAME / S3_ENDPOINT_URL); nothing was written")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                "AuthorizationHeaderMalformed"):
        return PreflightError(f"the object store refused these credentials ({code})", detail=where,
                              hint="check S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY (or the AWS credential chain)")
    if code in ("403", "AccessDenied", "AllAccessDisabled"):
        need = "s3:PutObject" if write else "s3:ListBucket / s3:GetObject"
        return PreflightError(f"access denied {what} ({code})", detail=where,
                              hint=f"grant these credentials {need} on the bucket (and prefix)")
    return PreflightError(f"the object store refused {what}: {code or exc}", detail=where,
                          hint="see the store's message above")


def _unreachable(exc: Exception, where: str) -> PreflightError | TransientError:
    if isinstance(exc, NoCredentialsError):
        return PreflightError("no credentials for the object store", detail=where,
                              hint="set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY, or provide the AWS credential "
                                   "chain (instance role, AWS_* variables)")
    return TransientError(f"the object store does not answer: {exc.__class__.__name__}", detail=f"{where}: {exc}",
                          hint="check S3_ENDPOINT_URL and that the service is reachable from here; then run again "
                               "(nothing was lost: `migrate files` continues where it stopped)")
