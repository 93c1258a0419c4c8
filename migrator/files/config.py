"""HridaAI's object storage settings, read from its own environment variable names (open_webui/config.py and
storage/provider.py of its upstream): what `migrate files` writes to, and the URI form each provider records.

STORAGE_PROVIDER is matched exactly, as HridaAI matches it: `local` (nothing to move), `s3`, `gcs`, `azure`;
anything else (`S3`, `minio`, ` s3`) is refused, because HridaAI itself would refuse to start with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from migrator.errors import UsageError

PROVIDERS = ("local", "s3", "gcs", "azure")
SECRET_NAMES = ("S3_SECRET_ACCESS_KEY", "GOOGLE_APPLICATION_CREDENTIALS_JSON", "AZURE_STORAGE_KEY")


@dataclass(frozen=True)
class StorageConfig:
    """Where uploads go, as HridaAI will look for them."""

    provider: str
    bucket: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    key_prefix: str = ""
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    addressing_style: str | None = None
    azure_endpoint: str = ""
    azure_container: str = ""
    azure_key: str | None = field(default=None, repr=False)
    gcs_credentials: dict | None = field(default=None, repr=False)  # service account info

    def describe(self) -> str:
        """For people and logs: no secret, ever."""
        if self.provider == "gcs":
            creds = "GOOGLE_APPLICATION_CREDENTIALS_JSON" if self.gcs_credentials else "the default Google credentials"
            return f"gs://{self.bucket} ({creds})"
        if self.provider == "azure":
            creds = "AZURE_STORAGE_KEY" if self.azure_key else "DefaultAzureCredential"
            return f"{self.azure_endpoint}/{self.azure_container} ({creds})"
        where = f"s3://{self.bucket}/{self.key_prefix}"
        creds = "S3_ACCESS_KEY_ID/S3_SECRET_ACCESS_KEY" if self.access_key_id else "the default AWS credential chain"
        return f"{where} at {self.endpoint_url or 'AWS'} ({creds})"


def from_env(env: Mapping[str, str] | None = None) -> StorageConfig:
    """The storage settings HridaAI would use with this environment. UsageError (exit 2) when they are incomplete
    or name a provider HridaAI does not accept."""
    env = os.environ if env is None else env
    provider = env.get("STORAGE_PROVIDER")
    if provider is None or provider == "":
        raise UsageError("STORAGE_PROVIDER is not set: there is no object storage to move uploads to",
                         hint="set STORAGE_PROVIDER=s3 (with S3_BUCKET_NAME, ...) as HridaAI will have it")
    if provider not in PROVIDERS:
        raise UsageError(f"STORAGE_PROVIDER={provider!r} is not a provider HridaAI accepts",
                         detail=f"HridaAI matches exactly one of {', '.join(PROVIDERS)} (lower case, no spaces) and "
                                "refuses to start with anything else",
                         hint="set STORAGE_PROVIDER=s3 for any S3-compatible store (MinIO, R2, Ceph ...)")
    if provider == "local":
        raise UsageError("STORAGE_PROVIDER=local keeps uploads on HridaAI's volume: nothing to move",
                         hint="share the uploads/ directory through a ReadWriteMany volume instead (deploy/RUNBOOK.md)")
    if provider == "gcs":
        bucket = env.get("GCS_BUCKET_NAME") or ""
        if not bucket:
            raise UsageError("GCS_BUCKET_NAME is not set", hint="the bucket HridaAI will read uploads from")
        info = env.get("GOOGLE_APPLICATION_CREDENTIALS_JSON") or None
        try:
            creds = json.loads(info) if info else None
        except ValueError as exc:
            raise UsageError("GOOGLE_APPLICATION_CREDENTIALS_JSON is not JSON",
                             detail=f"{exc.__class__.__name__} at position {getattr(exc, 'pos', '?')}",
                             hint="the service account key file's content, as HridaAI takes it") from None
        if creds is not None and not isinstance(creds, dict):
            raise UsageError("GOOGLE_APPLICATION_CREDENTIALS_JSON is not a JSON object (a service account key)")
        return StorageConfig(provider=provider, bucket=bucket, gcs_credentials=creds)
    if provider == "azure":
        endpoint, container = env.get("AZURE_STORAGE_ENDPOINT") or "", env.get("AZURE_STORAGE_CONTAINER_NAME") or ""
        if not endpoint or not container:
            raise UsageError("AZURE_STORAGE_ENDPOINT and AZURE_STORAGE_CONTAINER_NAME must both be set",
                             hint="the account URL (https://<account>.blob.core.windows.net) and the container "
                                  "HridaAI will read uploads from")
        return StorageConfig(provider=provider, azure_endpoint=endpoint, azure_container=container,
                             azure_key=env.get("AZURE_STORAGE_KEY") or None)
    bucket = env.get("S3_BUCKET_NAME") or ""
    if not bucket:
        raise UsageError("S3_BUCKET_NAME is not set", hint="the bucket HridaAI will read uploads from")
    style = env.get("S3_ADDRESSING_STYLE") or None
    if style not in (None, "auto", "virtual", "path"):
        raise UsageError(f"S3_ADDRESSING_STYLE={style!r} is not one of auto, virtual, path")
    return StorageConfig(provider=provider, bucket=bucket, endpoint_url=env.get("S3_ENDPOINT_URL") or None,
                         region=env.get("S3_REGION_NAME") or None, key_prefix=env.get("S3_KEY_PREFIX") or "",
                         access_key_id=env.get("S3_ACCESS_KEY_ID") or None,
                         secret_access_key=env.get("S3_SECRET_ACCESS_KEY") or None, addressing_style=style)
