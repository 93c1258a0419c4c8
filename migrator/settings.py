"""One frozen Settings object: flags > HridaAI's own environment variables > defaults.

Every variable can also come from a file: `NAME_FILE=/path` (Docker/Kubernetes secrets), or a file named `NAME` in
the directory `HRIDAAI_MIGRATE_SECRETS_DIR` (a mounted Secret, one file per key). Nothing else reads the
environment; nothing else prints a DSN unmasked; `Settings.origins` says where each value came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Mapping

from migrator.convert.policies import resolve_actions
from migrator.dsn import MASK, compose, mask_dsn, normalise_pg_url  # noqa: F401  (re-exported)
from migrator.errors import UsageError

DEFAULT_WORK_DIR = "hridaai-migrate-work"
DEFAULT_BATCH_ROWS = 10_000
DEFAULT_BATCH_BYTES = 8 * 1024 * 1024  # 16 MiB measured 638 MB peak RSS at 2 GB of chats with 2 jobs; 8 MiB 473 MB, same speed
SOURCE_DB_NAMES = ("hridaai.db", "webui.db")
SECRETS_DIR_VAR = "HRIDAAI_MIGRATE_SECRETS_DIR"
POLICY_HINT = "`migrate policies` lists every policy and the actions it allows; pass --policy NAME=ACTION"
DSN_FIELDS = ("target_url", "pgvector_url")
SECRET_FIELDS = ("sqlcipher_key", "pgvector_pgcrypto_key")


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything a command needs, resolved once."""

    data_dir: Path | None = None
    work_dir: Path = Path(DEFAULT_WORK_DIR)
    target_url: str | None = None
    pgvector_url: str | None = None
    database_schema: str | None = None
    batch_rows: int = DEFAULT_BATCH_ROWS
    batch_bytes: int = DEFAULT_BATCH_BYTES
    jobs: int = 2
    policies: Mapping[str, str] = field(default_factory=dict)
    orphans: str = "quarantine"
    log_format: str = "auto"
    sample_size: int = 200
    vector_db: str = "chroma"
    vector_length: int = 1536
    use_halfvec: bool = False
    index_method: str = ""
    hnsw_m: int = 16
    hnsw_ef_construction: int = 64
    ivfflat_lists: int = 100
    pgvector_create_extension: bool = True
    pgvector_pgcrypto: bool = False
    pgvector_pgcrypto_key: str | None = None
    chroma_path: Path | None = None
    chroma_http_host: str | None = None
    chroma_http_port: int = 8000
    chroma_http_ssl: bool = False
    chroma_http_headers: tuple[tuple[str, str], ...] = ()
    chroma_tenant: str = "default_tenant"
    chroma_database: str = "default_database"
    sqlcipher_key: str | None = None
    force_clear: bool = False
    require_target: bool = False
    secrets_dir: Path | None = None
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def source_db(self) -> Path:
        """The SQLite file HridaAI uses inside DATA_DIR (hridaai.db; webui.db upstream)."""
        if self.data_dir is None:
            raise UsageError(
                "no HridaAI data directory given",
                hint="pass --data-dir or set DATA_DIR to the directory that holds hridaai.db",
            )
        for name in SOURCE_DB_NAMES:
            if os.path.exists(self.data_dir / name):  # never raises: an unreadable DATA_DIR is the snapshot's error
                return self.data_dir / name
        return self.data_dir / SOURCE_DB_NAMES[0]

    @property
    def vector_store(self) -> Path | None:
        """The embedded Chroma directory (CHROMA_DATA_PATH, default DATA_DIR/vector_db)."""
        if self.chroma_path is not None:
            return self.chroma_path
        return None if self.data_dir is None else self.data_dir / "vector_db"

    @property
    def embedded(self) -> bool:
        """True when no target was configured: use the local PostgreSQL under the work dir."""
        return self.target_url is None

    def with_target(self, url: str) -> "Settings":
        """A copy pointing at `url` (used once the embedded server is up)."""
        return replace(self, target_url=url, pgvector_url=self.pgvector_url or url)

    def displayable(self) -> dict:
        """The settings as a dict with every secret masked (passwords, keys, Chroma header values)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "origins"}
        for key in DSN_FIELDS:
            out[key] = mask_dsn(out[key])
        for key in SECRET_FIELDS:
            out[key] = MASK if out[key] else None
        out["chroma_http_headers"] = {name: MASK for name, _ in self.chroma_http_headers}
        out["policies"] = dict(self.policies)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}

    def __repr__(self) -> str:  # a Settings in a traceback or a log line must not carry a password
        return f"Settings({self.displayable()!r})"


class _Sources:
    """Flags, then HridaAI's variables (NAME, NAME_FILE, the secrets dir), then defaults; records which won."""

    def __init__(self, flags: Mapping[str, object], env: Mapping[str, str]):
        self.flags = {k: v for k, v in flags.items() if v is not None and v != {}}  # the CLI passes {} for no --policy
        self.env = env
        self.secrets_dir = Path(env[SECRETS_DIR_VAR]) if env.get(SECRETS_DIR_VAR) else None
        if self.secrets_dir is not None and not self.secrets_dir.is_dir():
            raise UsageError(f"{SECRETS_DIR_VAR} is not a directory", detail=str(self.secrets_dir),
                             hint="mount the Secret there (one file per variable name) or unset it")
        self.origins: dict[str, str] = {}

    def var(self, name: str) -> tuple[str | None, str | None]:
        """(value, origin) of one variable; an empty value counts as unset, as in HridaAI."""
        if self.env.get(name):
            return self.env[name], f"env {name}"
        path = self.env.get(f"{name}_FILE")
        if path:
            return _read_secret(Path(path), f"{name}_FILE"), f"file {name}_FILE"
        if self.secrets_dir is not None and (self.secrets_dir / name).is_file():
            return _read_secret(self.secrets_dir / name, name), f"secrets dir {self.secrets_dir}/{name}"
        return None, None

    def get(self, key: str, *names: str, flag: str | None = None, default=None):
        """The flag `flag`, else the first set variable of `names`, else `default`; remembered as origins[key]."""
        if flag and flag in self.flags:
            self.origins[key] = f"flag --{flag.replace('_', '-')}"
            return self.flags[flag]
        for name in names:
            value, origin = self.var(name)
            if value:
                self.origins[key] = origin
                return value
        self.origins[key] = "default"
        return default

    def integer(self, key: str, name: str, default: int) -> int:
        """An integer variable; a bad value is a usage error that names the variable."""
        raw = self.get(key, name, default=None)
        if raw is None:
            return default
        try:
            return int(str(raw).strip())
        except ValueError as exc:
            raise UsageError(f"{name} must be an integer", detail=f"from {self.origins[key]}") from exc

    def boolean(self, key: str, name: str, default: bool) -> bool:
        """A boolean variable (true/1/yes/on); unset keeps the default."""
        raw = self.get(key, name, default=None)
        return default if raw is None else str(raw).strip().lower() in ("1", "true", "yes", "on")


def _read_secret(path: Path, name: str) -> str:
    try:
        return path.read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:  # never echo the content: it may be half a secret
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"cannot read {name}", detail=f"{path}: {reason}",
                         hint="check that the secret is mounted and readable by this user") from None


def _database_url(src: _Sources) -> tuple[str | None, str]:
    """HridaAI's rule: DATABASE_TYPE/USER/PASSWORD/HOST/PORT/NAME override DATABASE_URL when all are set."""
    names = ("DATABASE_TYPE", "DATABASE_USER", "DATABASE_PASSWORD", "DATABASE_HOST", "DATABASE_PORT", "DATABASE_NAME")
    parts = {name: src.var(name) for name in names}
    kind, user, password, host, port, dbname = (parts[n][0] for n in names)
    if kind and user and host and port and dbname:
        origin = "composed from " + ", ".join(o for _, o in parts.values() if o)
        if kind.startswith("sqlite"):
            return None, origin + " (SQLite: no target, the embedded PostgreSQL is used)"
        return compose(kind, user, password, host, port, dbname), origin
    url, origin = src.var("DATABASE_URL")
    if url and url.startswith("sqlite"):
        return None, f"{origin} is SQLite: no target, the embedded PostgreSQL is used"
    return url, origin or "default (none: the embedded PostgreSQL is used)"


def _headers(raw: str | None) -> tuple[tuple[str, str], ...]:
    """CHROMA_HTTP_HEADERS "k=v,k2=v2" (HridaAI's format); values may hold tokens and are never echoed."""
    pairs = []
    for item in filter(None, (raw or "").split(",")):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError("CHROMA_HTTP_HEADERS must be name=value pairs separated by commas",
                             detail=f"an entry without '=' (header {name.strip()[:40]!r})")
        pairs.append((name.strip(), value.strip()))
    return tuple(pairs)


def build(flags: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Resolve Settings from flags (None = not given) over env (or files) over defaults."""
    src = _Sources(flags or {}, os.environ if env is None else env)
    values = dict(_connection(src), **_vectors(src), **_chroma(src), **_run(src))
    values["require_target"] = src.boolean("require_target", "HRIDAAI_MIGRATE_REQUIRE_TARGET", False)
    if values["require_target"] and values["target_url"] is None:  # a Job must never "succeed" into a scratch server
        raise UsageError("no target database configured, and HRIDAAI_MIGRATE_REQUIRE_TARGET forbids the embedded one",
                         hint="set DATABASE_URL (or DATABASE_TYPE/USER/PASSWORD/HOST/PORT/NAME); in Kubernetes, "
                              "check that the Job's envFrom names HridaAI's ConfigMap and Secret")
    try:  # a wrong --policy is a configuration error: `migrate config` (the Job's first step) catches it
        resolve_actions(values["policies"])
    except ValueError as exc:
        raise UsageError(str(exc), hint=POLICY_HINT) from None
    values["origins"] = dict(src.origins)
    values["secrets_dir"] = src.secrets_dir
    if values["batch_rows"] < 1 or values["batch_bytes"] < 1024:
        raise UsageError("batch limits too small", hint="use --batch-rows >= 1 and --batch-bytes >= 1024")
    return Settings(**values)


def _connection(src: _Sources) -> dict:
    if "target" in src.flags:
        target, src.origins["target_url"] = src.flags["target"], "flag --target"
    else:
        target, src.origins["target_url"] = _database_url(src)
    pgvector = src.get("pgvector_url", "PGVECTOR_DB_URL", flag="pgvector_target")
    if not pgvector:
        pgvector, src.origins["pgvector_url"] = target, "same as the target (PGVECTOR_DB_URL unset)"
    kind = src.var("DATABASE_TYPE")[0] or ""
    key = src.get("sqlcipher_key", "DATABASE_PASSWORD") if kind.startswith("sqlite") else None
    target_url = normalise_pg_url(str(target)) if target else None
    return dict(target_url=target_url,
                pgvector_url=target_url if pgvector == target else normalise_pg_url(str(pgvector)),
                database_schema=src.get("database_schema", "DATABASE_SCHEMA", flag="database_schema"),
                sqlcipher_key=key)


def _vectors(src: _Sources) -> dict:
    return dict(
        vector_db=str(src.get("vector_db", "VECTOR_DB", default="chroma")).strip().lower(),
        vector_length=src.integer("vector_length", "PGVECTOR_INITIALIZE_MAX_VECTOR_LENGTH", 1536),
        use_halfvec=src.boolean("use_halfvec", "PGVECTOR_USE_HALFVEC", False),
        index_method=str(src.get("index_method", "PGVECTOR_INDEX_METHOD", default="")).strip().lower(),
        hnsw_m=src.integer("hnsw_m", "PGVECTOR_HNSW_M", 16),
        hnsw_ef_construction=src.integer("hnsw_ef_construction", "PGVECTOR_HNSW_EF_CONSTRUCTION", 64),
        ivfflat_lists=src.integer("ivfflat_lists", "PGVECTOR_IVFFLAT_LISTS", 100),
        pgvector_create_extension=src.boolean("pgvector_create_extension", "PGVECTOR_CREATE_EXTENSION", True),
        pgvector_pgcrypto=src.boolean("pgvector_pgcrypto", "PGVECTOR_PGCRYPTO", False),
        pgvector_pgcrypto_key=src.get("pgvector_pgcrypto_key", "PGVECTOR_PGCRYPTO_KEY"),
    )


def _chroma(src: _Sources) -> dict:
    path = src.get("chroma_path", "CHROMA_DATA_PATH", flag="chroma_path")
    return dict(
        chroma_path=Path(path) if path else None,
        chroma_http_host=src.get("chroma_http_host", "CHROMA_HTTP_HOST"),
        chroma_http_port=src.integer("chroma_http_port", "CHROMA_HTTP_PORT", 8000),
        chroma_http_ssl=src.boolean("chroma_http_ssl", "CHROMA_HTTP_SSL", False),
        chroma_http_headers=_headers(src.get("chroma_http_headers", "CHROMA_HTTP_HEADERS")),
        chroma_tenant=src.get("chroma_tenant", "CHROMA_TENANT", default="default_tenant"),
        chroma_database=src.get("chroma_database", "CHROMA_DATABASE", default="default_database"),
    )


def _run(src: _Sources) -> dict:
    data_dir = src.get("data_dir", "DATA_DIR", flag="data_dir")
    return dict(
        data_dir=Path(data_dir) if data_dir else None,
        work_dir=Path(src.get("work_dir", "HRIDAAI_MIGRATE_WORK_DIR", flag="work_dir", default=DEFAULT_WORK_DIR)),
        batch_rows=int(src.get("batch_rows", flag="batch_rows", default=DEFAULT_BATCH_ROWS)),
        batch_bytes=int(src.get("batch_bytes", flag="batch_bytes", default=DEFAULT_BATCH_BYTES)),
        jobs=int(src.get("jobs", flag="jobs", default=max(1, min(2, _usable_cpus())))),
        policies=dict(src.get("policies", flag="policies", default={}) or {}),
        orphans=str(src.get("orphans", flag="orphans", default="quarantine")),
        log_format=str(src.get("log_format", flag="log_format", default="auto")),
        sample_size=int(src.get("sample_size", flag="sample_size", default=200)),
        force_clear=bool(src.get("force_clear", flag="force_clear", default=False)),
    )


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: taskset, cpusets), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
