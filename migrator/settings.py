"""One frozen Settings object: flags > HridaAI's own environment variables > defaults.

Nothing else reads the environment; nothing else prints a DSN unmasked.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Mapping
from urllib.parse import quote, urlsplit, urlunsplit

from migrator.errors import UsageError

DEFAULT_WORK_DIR = "hridaai-migrate-work"
DEFAULT_BATCH_ROWS = 10_000
DEFAULT_BATCH_BYTES = 16 * 1024 * 1024
SOURCE_DB_NAMES = ("hridaai.db", "webui.db")


@dataclass(frozen=True)
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
    vector_length: int = 1536
    use_halfvec: bool = False
    index_method: str = ""
    hnsw_m: int = 16
    hnsw_ef_construction: int = 64
    ivfflat_lists: int = 100
    chroma_path: Path | None = None
    chroma_http_host: str | None = None
    chroma_http_port: int = 8000
    sqlcipher_key: str | None = None
    force_clear: bool = False

    @property
    def source_db(self) -> Path:
        """The SQLite file HridaAI uses inside DATA_DIR (hridaai.db; webui.db upstream)."""
        if self.data_dir is None:
            raise UsageError(
                "no HridaAI data directory given",
                hint="pass --data-dir or set DATA_DIR to the directory that holds hridaai.db",
            )
        for name in SOURCE_DB_NAMES:
            if (self.data_dir / name).exists():
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
        """The settings as a dict with every secret masked."""
        out = asdict(self)
        for key in ("target_url", "pgvector_url"):
            out[key] = mask_dsn(out[key])
        out["sqlcipher_key"] = "****" if self.sqlcipher_key else None
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}


_PW_QUERY = re.compile(r"(?i)(password=)[^&\s]*")


def mask_dsn(dsn: str | None) -> str | None:
    """Replace the password of a URL-style DSN (and any password= parameter) with ****."""
    if not dsn:
        return dsn
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "****"
    netloc = parts.netloc
    if "@" in netloc:
        creds, host = netloc.rsplit("@", 1)
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":****"
        netloc = f"{creds}@{host}"
    masked = urlunsplit((parts.scheme, netloc, parts.path, _PW_QUERY.sub(r"\1****", parts.query), parts.fragment))
    return masked


def normalise_pg_url(url: str) -> str:
    """HridaAI accepts postgres://, postgresql+psycopg2:// ...; asyncpg wants postgresql://."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise UsageError("the target database URL is not a URL", detail=mask_dsn(url),
                         hint="use postgresql://user:password@host:5432/dbname")
    base = scheme.split("+", 1)[0].lower()
    if base not in ("postgres", "postgresql"):
        raise UsageError(f"the target must be PostgreSQL, got a {base}:// URL",
                         hint="set DATABASE_URL (or --target) to postgresql://user:password@host:5432/dbname")
    return "postgresql://" + rest


def _env_or_file(env: Mapping[str, str], name: str) -> str | None:
    """`NAME`, else the contents of the file named by `NAME_FILE` (Kubernetes/Docker secrets)."""
    if env.get(name):
        return env[name]
    path = env.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read {name}_FILE", detail=f"{path}: {exc.strerror}") from exc
    return None


def compose_database_url(env: Mapping[str, str]) -> str | None:
    """HridaAI's rule: DATABASE_TYPE/USER/PASSWORD/HOST/PORT/NAME override DATABASE_URL when all are set."""
    kind, user = env.get("DATABASE_TYPE"), env.get("DATABASE_USER")
    host, port, name = env.get("DATABASE_HOST"), env.get("DATABASE_PORT"), env.get("DATABASE_NAME")
    password = _env_or_file(env, "DATABASE_PASSWORD")
    if kind and user and host and port and name and kind.startswith("postgres"):
        cred = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
        return f"postgresql://{cred}@{host}:{port}/{name}"
    url = _env_or_file(env, "DATABASE_URL")
    if url and url.startswith("sqlite"):
        return None
    return url


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise UsageError(f"{name} must be an integer", detail=f"got {raw!r}") from exc


def build(flags: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Resolve Settings from flags (None = not given) over env over defaults."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    env = os.environ if env is None else env
    target = flags.get("target") or compose_database_url(env)
    pgvector = flags.get("pgvector_target") or _env_or_file(env, "PGVECTOR_DB_URL") or target
    data_dir = flags.get("data_dir") or env.get("DATA_DIR")
    values = dict(
        data_dir=Path(data_dir) if data_dir else None,
        work_dir=Path(flags.get("work_dir") or env.get("HRIDAAI_MIGRATE_WORK_DIR") or DEFAULT_WORK_DIR),
        target_url=normalise_pg_url(str(target)) if target else None,
        pgvector_url=normalise_pg_url(str(pgvector)) if pgvector else None,
        database_schema=env.get("DATABASE_SCHEMA") or None,
        batch_rows=int(flags.get("batch_rows") or DEFAULT_BATCH_ROWS),
        batch_bytes=int(flags.get("batch_bytes") or DEFAULT_BATCH_BYTES),
        jobs=int(flags.get("jobs") or max(1, min(2, os.cpu_count() or 1))),
        policies=dict(flags.get("policies") or {}),
        orphans=str(flags.get("orphans") or "quarantine"),
        log_format=str(flags.get("log_format") or "auto"),
        sample_size=int(flags.get("sample_size") or 200),
        vector_length=_int(env, "PGVECTOR_INITIALIZE_MAX_VECTOR_LENGTH", 1536),
        use_halfvec=_bool(env.get("PGVECTOR_USE_HALFVEC")),
        index_method=(env.get("PGVECTOR_INDEX_METHOD") or "").strip().lower(),
        hnsw_m=_int(env, "PGVECTOR_HNSW_M", 16),
        hnsw_ef_construction=_int(env, "PGVECTOR_HNSW_EF_CONSTRUCTION", 64),
        ivfflat_lists=_int(env, "PGVECTOR_IVFFLAT_LISTS", 100),
        chroma_path=Path(flags["chroma_path"]) if flags.get("chroma_path") else (
            Path(env["CHROMA_DATA_PATH"]) if env.get("CHROMA_DATA_PATH") else None),
        chroma_http_host=env.get("CHROMA_HTTP_HOST") or None,
        chroma_http_port=_int(env, "CHROMA_HTTP_PORT", 8000),
        sqlcipher_key=_env_or_file(env, "DATABASE_PASSWORD") if (env.get("DATABASE_TYPE") or "").startswith("sqlite") else None,
        force_clear=bool(flags.get("force_clear") or False),
    )
    if values["batch_rows"] < 1 or values["batch_bytes"] < 1024:
        raise UsageError("batch limits too small", hint="use --batch-rows >= 1 and --batch-bytes >= 1024")
    return Settings(**values)
