"""The object store STORAGE_PROVIDER names, behind one interface (what `run.py` and `verify.py` use):

describe(), key(name), uri(key), key_of_uri(uri) (how HridaAI reads a recorded path back), check(), listing(),
stat(key), put_bytes(data, key, sha256), put(path, key, sha256), digest(key), abort_stale_uploads(keys).
"""

from __future__ import annotations

from migrator.files.config import StorageConfig


def open_store(cfg: StorageConfig):
    """An S3Store, a GCSStore or an AzureStore for `cfg` (its client library imported only when used)."""
    if cfg.provider == "gcs":
        from migrator.files.gcs import GCSStore

        return GCSStore(cfg)
    if cfg.provider == "azure":
        from migrator.files.azure import AzureStore

        return AzureStore(cfg)
    from migrator.files.s3 import S3Store

    return S3Store(cfg)
