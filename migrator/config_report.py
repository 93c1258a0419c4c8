"""`migrate config`: the resolved settings, where each came from, and what an operator should know — no secrets.

It reads nothing but the settings and the file system (no database connection), so a Job or a shell can run it
first to see what `plan`/`run`/`verify` will use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from urllib.parse import parse_qs, urlsplit

from migrator import access
from migrator.dsn import ssl_summary
from migrator.settings import Settings

VERIFYING_MODES = ("verify-ca", "verify-full")


@dataclass
class ConfigReport:
    """Masked settings, their origins, derived paths and TLS parameters, and notes for people."""

    settings: dict
    origins: dict
    derived: dict
    notes: list[str] = field(default_factory=list)

    def asdict(self) -> dict:
        """JSON form."""
        return asdict(self)

    def asstr(self) -> str:
        """One line per setting: name, value, origin; then derived values and notes."""
        width = max(map(len, self.settings))
        lines = [f"{k:<{width}}  {_fmt(v):<40}  [{self.origins.get(k, 'default')}]" for k, v in self.settings.items()]
        lines.append("")
        lines += [f"{k:<{width}}  {_fmt(v)}" for k, v in self.derived.items()]
        lines += ["", *(f"NOTE: {n}" for n in self.notes)] if self.notes else []
        return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return "-" if value in (None, "") else str(value)


def report(settings: Settings) -> ConfigReport:
    """Build the report; every password, key and header value is masked by Settings.displayable()."""
    derived = {
        "source_db": str(settings.source_db) if settings.data_dir else None,
        "vector_store": str(settings.vector_store) if settings.vector_store else None,
        "embedded_target": settings.embedded,
        "target_tls": ssl_summary(settings.target_url),
        "pgvector_tls": ssl_summary(settings.pgvector_url),
    }
    return ConfigReport(settings.displayable(), dict(settings.origins), derived, notes(settings))


def notes(settings: Settings) -> list[str]:
    """What is likely to surprise an operator about these settings."""
    out = []
    if settings.data_dir is None:
        out.append("DATA_DIR is not set: pass --data-dir or set DATA_DIR to the directory that holds hridaai.db")
    elif access.exists(settings.source_db) is None:  # config only looks: it never opens the source
        out.append(f"{settings.data_dir} cannot be looked into as {access.identity()}: plan and run will refuse "
                   "(securityContext runAsUser / fsGroup, or the files' modes)")
    elif not access.exists(settings.source_db):
        out.append(f"no hridaai.db (or webui.db) in {settings.data_dir}")
    if settings.embedded:
        out.append("no DATABASE_URL / --target: plan, run and verify use the EMBEDDED PostgreSQL under "
                   f"{settings.work_dir} (a trial target, not your production database)")
    out += _tls_note("target", settings.target_url)
    if settings.pgvector_url != settings.target_url:
        out += _tls_note("pgvector target", settings.pgvector_url)
    if settings.origins.get("target_url") == "flag --target" and urlsplit(settings.target_url or "").password:
        out.append("the target password was given on the command line, where `ps` shows it: prefer DATABASE_URL, "
                   "DATABASE_PASSWORD_FILE or HRIDAAI_MIGRATE_SECRETS_DIR")
    if settings.vector_db not in ("chroma", "pgvector"):
        out.append(f"VECTOR_DB={settings.vector_db}: this tool moves Chroma vectors only; HridaAI's vectors in "
                   f"{settings.vector_db} are not migrated")
    elif settings.vector_db == "pgvector":
        out.append("VECTOR_DB=pgvector already: HridaAI does not read the Chroma store; any vector_db/ found is "
                   "still migrated into document_chunk")
    if settings.chroma_http_host:
        out.append(f"CHROMA_HTTP_HOST is set: vectors are read from the Chroma server "
                   f"{settings.chroma_http_host}:{settings.chroma_http_port}, not from {settings.vector_store}")
    return out


def _tls_note(name: str, url: str | None) -> list[str]:
    if not url:
        return []
    parts = urlsplit(url)
    host = parts.hostname or parse_qs(parts.query).get("host", [""])[0]  # ?host= may name a server or a socket dir
    local = host in ("", "localhost", "127.0.0.1", "::1") or host.startswith("/")
    mode = ssl_summary(url)["sslmode"]
    if local or mode in VERIFYING_MODES:
        return []
    return [f"the {name} {host} is reached with sslmode={mode.split()[0]}: the server's identity is not verified; "
            "add sslmode=verify-full&sslrootcert=/path/to/ca.crt to the URL"]
