"""PostgreSQL URLs as HridaAI writes them, made safe to print and fit for asyncpg.

HridaAI hands its URL to SQLAlchemy (psycopg2 / psycopg 3, i.e. libpq); this tool connects with asyncpg, which reads
the same URL form and the libpq SSL parameters (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `sslpassword`,
`sslcrl`). What differs is normalised here, once: `postgres://` and driver suffixes, the asyncpg-style `ssl=`
spelling, and libpq-only client options that asyncpg would otherwise send to the server as settings.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import quote, unquote

from migrator.errors import UsageError

log = logging.getLogger(__name__)

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# libpq client options asyncpg does not know: it would pass them to the server as run-time settings, and the
# server would refuse the connection ("unrecognized configuration parameter").
LIBPQ_ONLY = frozenset({"connect_timeout", "channel_binding", "gssencmode", "gssdelegation", "keepalives",
                        "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
                        "sslcompression", "sslsni", "requirepeer", "require_auth", "load_balance_hosts"})
_SSL_BOOL = {"true": "require", "1": "require", "yes": "require", "on": "require",
             "false": "disable", "0": "disable", "no": "disable", "off": "disable"}
_PW_PARAM = re.compile(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)")
MASK = "****"


def mask_dsn(dsn: str | None) -> str | None:
    """Replace the password of a URL (and any `password=` / `sslpassword=` parameter) with ****.

    The user info ends at the *last* `@`, so a password holding an unescaped `@`, `/`, `?` or `#` is masked whole
    (over-masking a URL that has an `@` in its query is the safe side to err on).
    """
    if not dsn:
        return dsn
    scheme, sep, rest = dsn.partition("://")
    if not sep:  # a libpq key=value string, or garbage: mask what looks like a password
        return _PW_PARAM.sub(rf"\g<1>{MASK}", dsn)
    at = rest.rfind("@")
    creds, tail = (rest[:at], rest[at:]) if at >= 0 else ("", rest)
    user, colon, _ = creds.partition(":")
    return f"{scheme}://{user}{':' + MASK if colon else ''}" + _PW_PARAM.sub(rf"\g<1>{MASK}", tail)


def compose(kind: str, user: str, password: str | None, host: str, port: str, name: str) -> str:
    """HridaAI's `{type}://{user}[:{password}]@{host}:{port}/{name}`, credentials quoted for asyncpg.

    HridaAI does not URL-encode the parts and SQLAlchemy *unquotes* them, so operators who followed the hint to
    URL-encode special characters wrote e.g. `p%40ss` for `p@ss`: unquote first, then quote, to reach the same
    password.
    """
    cred = quote(unquote(user), safe="")
    if password:
        cred += ":" + quote(unquote(password), safe="")
    return f"{kind}://{cred}@{host}:{port}/{name}"


def normalise_pg_url(url: str) -> str:
    """HridaAI accepts postgres://, postgresql+psycopg2:// ...; asyncpg wants postgresql:// and libpq SSL names."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise UsageError("the target database URL is not a URL", detail=mask_dsn(url),
                         hint="use postgresql://user:password@host:5432/dbname")
    base = scheme.split("+", 1)[0].lower()
    if base not in ("postgres", "postgresql"):
        raise UsageError(f"the target must be PostgreSQL, got a {base}:// URL",
                         hint="set DATABASE_URL (or --target) to postgresql://user:password@host:5432/dbname")
    at = rest.rfind("@") + 1
    location, q, query = rest[at:].partition("?")
    return "postgresql://" + rest[:at] + location + (q + _normalise_query(query, url) if q else "")


def _normalise_query(query: str, url: str) -> str:
    """Rewrite `ssl=` to `sslmode=`, drop libpq-only options, check sslmode and the certificate files."""
    explicit_mode = any(part.split("=", 1)[0] == "sslmode" for part in query.split("&"))
    out = []
    for part in filter(None, query.split("&")):
        key, _, raw = part.partition("=")
        value = unquote(raw.replace("+", " "))
        if key == "ssl":
            if explicit_mode:
                continue
            key, value = "sslmode", _SSL_BOOL.get(value.lower(), value.lower())
            part = f"sslmode={value}"
        if key in LIBPQ_ONLY:
            log.warning("ignoring %s in the database URL: a libpq option asyncpg does not support", key)
            continue
        _check_ssl_param(key, value, url)
        out.append(part)
    return "&".join(out)


def _check_ssl_param(key: str, value: str, url: str) -> None:
    if key == "sslmode" and value not in SSL_MODES:
        raise UsageError(f"sslmode={value} is not a libpq SSL mode", detail=mask_dsn(url),
                         hint="use one of " + ", ".join(SSL_MODES) + " (verify-full with sslrootcert=CA file)")
    if key in ("sslrootcert", "sslcert", "sslkey", "sslcrl") and value != "system" and not Path(value).is_file():
        raise UsageError(f"{key} names a file that does not exist or is not readable", detail=value,
                         hint="mount the certificate (e.g. from a Kubernetes Secret) and point the URL at it")


def ssl_summary(url: str | None) -> dict:
    """The SSL parameters of a URL (for `migrate config`); asyncpg's default sslmode is prefer, as libpq's."""
    if not url:
        return {}
    query = url.rsplit("@", 1)[-1].partition("?")[2]
    params = dict(p.partition("=")[::2] for p in query.split("&") if p.startswith("ssl"))
    params = {k: unquote(v) for k, v in params.items() if k != "sslpassword"}
    params.setdefault("sslmode", "prefer (default)")
    return params
