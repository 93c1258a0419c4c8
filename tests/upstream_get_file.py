"""Run HridaAI's own storage provider (open_webui/storage/provider.py of upstream release 0.12.4, downloaded by
scripts/setup into .tools/, never committed) to read migrated paths back, as the app does when a user opens a file.

    python tests/upstream_get_file.py UPLOAD_DIR PATH...      (STORAGE_PROVIDER, S3_*, GCS_*, AZURE_* in the env)

Prints, per PATH, the SHA-256 and size of the bytes its `Storage.get_file(PATH)` wrote into UPLOAD_DIR. Only the
modules provider.py imports from the app are stood in for, with what the app's config would hold for this
environment (open_webui.config reads the same variable names with the same defaults); the provider code runs as is.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

PROVIDER = Path(__file__).resolve().parent.parent / ".tools" / "open-webui-0.12.4" / "open_webui" / "storage" / \
    "provider.py"


def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


def main() -> None:
    upload_dir, paths = sys.argv[1], sys.argv[2:]
    env = os.environ.get
    _module("open_webui")
    _module("open_webui.storage")
    _module("open_webui.utils")
    _module("open_webui.env", USE_SLIM=False)
    _module("open_webui.constants", ERROR_MESSAGES=types.SimpleNamespace(EMPTY_CONTENT="empty"))
    _module("open_webui.utils.json_codec", JSONCodec=types.SimpleNamespace(loads=json.loads))
    _module("open_webui.config", STORAGE_PROVIDER=env("STORAGE_PROVIDER", "local"), UPLOAD_DIR=upload_dir,
            S3_ACCESS_KEY_ID=env("S3_ACCESS_KEY_ID"), S3_SECRET_ACCESS_KEY=env("S3_SECRET_ACCESS_KEY"),
            S3_REGION_NAME=env("S3_REGION_NAME"), S3_BUCKET_NAME=env("S3_BUCKET_NAME"),
            S3_KEY_PREFIX=env("S3_KEY_PREFIX"), S3_ENDPOINT_URL=env("S3_ENDPOINT_URL"),
            S3_USE_ACCELERATE_ENDPOINT=env("S3_USE_ACCELERATE_ENDPOINT", "false").lower() == "true",
            S3_ADDRESSING_STYLE=env("S3_ADDRESSING_STYLE"), S3_ENABLE_TAGGING=False,
            GCS_BUCKET_NAME=env("GCS_BUCKET_NAME"),
            GOOGLE_APPLICATION_CREDENTIALS_JSON=env("GOOGLE_APPLICATION_CREDENTIALS_JSON"),
            AZURE_STORAGE_ENDPOINT=env("AZURE_STORAGE_ENDPOINT"),
            AZURE_STORAGE_CONTAINER_NAME=env("AZURE_STORAGE_CONTAINER_NAME"),
            AZURE_STORAGE_KEY=env("AZURE_STORAGE_KEY"))
    spec = importlib.util.spec_from_file_location("open_webui.storage.provider", PROVIDER)
    provider = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(provider)  # builds `Storage` from STORAGE_PROVIDER, as the app does at start
    for path in paths:
        local = Path(provider.Storage.get_file(path))
        data = local.read_bytes()
        print(json.dumps({"path": path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}))


if __name__ == "__main__":
    main()
