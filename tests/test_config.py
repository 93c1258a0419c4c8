"""Configuration parity: HridaAI's variable names, URL composition, secret files, precedence, masking."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from conftest import SMALL, run_cli
from migrator import config_report
from migrator.dsn import mask_dsn, normalise_pg_url
from migrator.errors import EXIT_USAGE, UsageError
from migrator.settings import DEFAULT_BATCH_ROWS, build

PW = "Zq7-s3cret"
COMPOSE = {"DATABASE_TYPE": "postgresql", "DATABASE_USER": "hridaai", "DATABASE_PASSWORD": PW,
           "DATABASE_HOST": "db.internal", "DATABASE_PORT": "5433", "DATABASE_NAME": "hridaai"}


def _password(url: str) -> str:
    """The password asyncpg will send (it unquotes the URL's password, as SQLAlchemy does for HridaAI)."""
    return unquote(urlsplit(url).password)


# -- HridaAI's names and defaults ---------------------------------------------------------------------------------

ENV_NAMES = [
    ("DATA_DIR", "/srv/data", "data_dir", Path("/srv/data")),
    ("HRIDAAI_MIGRATE_WORK_DIR", "/scratch", "work_dir", Path("/scratch")),
    ("DATABASE_SCHEMA", "hridaai", "database_schema", "hridaai"),
    ("VECTOR_DB", "PGVector", "vector_db", "pgvector"),
    ("PGVECTOR_INITIALIZE_MAX_VECTOR_LENGTH", "3072", "vector_length", 3072),
    ("PGVECTOR_USE_HALFVEC", "true", "use_halfvec", True),
    ("PGVECTOR_INDEX_METHOD", "HNSW", "index_method", "hnsw"),
    ("PGVECTOR_HNSW_M", "32", "hnsw_m", 32),
    ("PGVECTOR_HNSW_EF_CONSTRUCTION", "128", "hnsw_ef_construction", 128),
    ("PGVECTOR_IVFFLAT_LISTS", "50", "ivfflat_lists", 50),
    ("PGVECTOR_CREATE_EXTENSION", "false", "pgvector_create_extension", False),
    ("PGVECTOR_PGCRYPTO", "True", "pgvector_pgcrypto", True),
    ("PGVECTOR_PGCRYPTO_KEY", "k3y", "pgvector_pgcrypto_key", "k3y"),
    ("CHROMA_DATA_PATH", "/srv/chroma", "chroma_path", Path("/srv/chroma")),
    ("CHROMA_HTTP_HOST", "chroma.internal", "chroma_http_host", "chroma.internal"),
    ("CHROMA_HTTP_PORT", "8443", "chroma_http_port", 8443),
    ("CHROMA_HTTP_SSL", "true", "chroma_http_ssl", True),
    ("CHROMA_HTTP_HEADERS", "Authorization=Bearer t0k=n, X-Org = a", "chroma_http_headers",
     (("Authorization", "Bearer t0k=n"), ("X-Org", "a"))),
    ("CHROMA_TENANT", "acme", "chroma_tenant", "acme"),
    ("CHROMA_DATABASE", "prod", "chroma_database", "prod"),
    ("PGVECTOR_DB_URL", "postgres://v@vec:5432/vectors", "pgvector_url", "postgresql://v@vec:5432/vectors"),
]


@pytest.mark.parametrize("name,value,attr,expected", ENV_NAMES, ids=[e[0] for e in ENV_NAMES])
def test_each_hridaai_variable_sets_its_setting(name, value, attr, expected):
    s = build({}, {name: value})
    assert getattr(s, attr) == expected
    assert s.origins[attr] == f"env {name}"
    assert getattr(build({}, {}), attr) != expected  # the default differs, so the variable really did it


def test_defaults_are_hridaais():
    s = build({}, {})
    assert (s.vector_db, s.vector_length, s.use_halfvec, s.index_method) == ("chroma", 1536, False, "")
    assert (s.hnsw_m, s.hnsw_ef_construction, s.ivfflat_lists) == (16, 64, 100)
    assert (s.chroma_http_port, s.chroma_tenant, s.chroma_database) == (8000, "default_tenant", "default_database")
    assert s.pgvector_create_extension and not s.pgvector_pgcrypto
    assert s.target_url is None and s.embedded and s.batch_rows == DEFAULT_BATCH_ROWS
    assert set(s.origins.values()) <= {"default", "same as the target (PGVECTOR_DB_URL unset)"} | {
        s.origins["target_url"]}


def test_sqlcipher_key_only_for_sqlite_database_type():
    assert build({}, {"DATABASE_TYPE": "sqlite+sqlcipher", "DATABASE_PASSWORD": "k"}).sqlcipher_key == "k"
    assert build({}, {"DATABASE_PASSWORD": "k"}).sqlcipher_key is None


@pytest.mark.parametrize("name,value", [("PGVECTOR_HNSW_M", "sixteen"), ("CHROMA_HTTP_PORT", "80a"),
                                        ("CHROMA_HTTP_HEADERS", "Authorization")])
def test_bad_values_are_usage_errors_naming_the_variable(name, value):
    with pytest.raises(UsageError) as err:
        build({}, {name: value})
    assert name in err.value.message and err.value.exit_code == EXIT_USAGE


# -- DATABASE_URL and its composition ----------------------------------------------------------------------------

def test_composition_overrides_database_url():
    s = build({}, {**COMPOSE, "DATABASE_URL": "postgresql://other@elsewhere/db"})
    parts = urlsplit(s.target_url)
    assert (parts.hostname, parts.port, parts.path, parts.username) == ("db.internal", 5433, "/hridaai", "hridaai")
    assert _password(s.target_url) == PW
    assert s.origins["target_url"].startswith("composed from env DATABASE_TYPE")
    assert s.pgvector_url == s.target_url  # PGVECTOR_DB_URL defaults to the (composed) DATABASE_URL


@pytest.mark.parametrize("missing", ["DATABASE_TYPE", "DATABASE_USER", "DATABASE_HOST", "DATABASE_PORT",
                                     "DATABASE_NAME"])
def test_composition_needs_all_five(missing):
    env = {k: v for k, v in COMPOSE.items() if k != missing}
    assert build({}, {**env, "DATABASE_URL": "postgresql://other@elsewhere/db"}).target_url == \
        "postgresql://other@elsewhere/db"


@pytest.mark.parametrize("given,sent", [("p%40ss", "p@ss"), ("p@ss:w/rd#?", "p@ss:w/rd#?"), ("50%off", "50%off")])
def test_composed_password_reaches_the_server_as_hridaai_sends_it(given, sent):
    """HridaAI does not encode the parts and SQLAlchemy unquotes them: %40 means @ there, and here."""
    url = build({}, {**COMPOSE, "DATABASE_PASSWORD": given}).target_url
    assert _password(url) == sent and urlsplit(url).hostname == "db.internal"


def test_composition_without_password_and_with_sqlite_type():
    assert build({}, {**COMPOSE, "DATABASE_PASSWORD": ""}).target_url == "postgresql://hridaai@db.internal:5433/hridaai"
    assert build({}, {**COMPOSE, "DATABASE_TYPE": "sqlite"}).target_url is None


@pytest.mark.parametrize("url,expected", [
    ("postgres://u:p@h:5432/d", "postgresql://u:p@h:5432/d"),
    ("postgresql+psycopg2://u@h/d", "postgresql://u@h/d"),
    ("postgresql+psycopg://u@h/d?sslmode=require", "postgresql://u@h/d?sslmode=require"),
    ("sqlite:////app/backend/data/hridaai.db", None),
])
def test_database_url_forms(url, expected):
    assert build({}, {"DATABASE_URL": url}).target_url == expected


@pytest.mark.parametrize("url", ["mysql://u:Zq7-s3cret@h/d", "host=h password=Zq7-s3cret dbname=d"])
def test_non_postgres_urls_are_refused_without_echoing_the_password(url):
    with pytest.raises(UsageError) as err:
        build({"target": url}, {})
    assert PW not in err.value.render()


# -- SSL query parameters ----------------------------------------------------------------------------------------

def test_ssl_parameters_pass_through_unchanged(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    url = f"postgresql://u@h/d?sslmode=verify-full&sslrootcert={ca}&application_name=m&target_session_attrs=any"
    assert normalise_pg_url(url) == url


@pytest.mark.parametrize("query,expected", [
    ("ssl=true", "sslmode=require"), ("ssl=False", "sslmode=disable"), ("ssl=verify-full", "sslmode=verify-full"),
    ("sslmode=verify-ca&ssl=true", "sslmode=verify-ca"),
    ("connect_timeout=10&sslmode=require&keepalives=1", "sslmode=require"),
])
def test_ssl_spellings_are_normalised_to_libpq_form(query, expected):
    assert normalise_pg_url(f"postgresql://u:pw@h/d?{query}") == f"postgresql://u:pw@h/d?{expected}"


def test_bad_ssl_settings_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="sslmode=verify_full"):
        normalise_pg_url("postgresql://u@h/d?sslmode=verify_full")
    with pytest.raises(UsageError, match="sslrootcert") as err:
        normalise_pg_url(f"postgresql://u:{PW}@h/d?sslmode=verify-full&sslrootcert={tmp_path}/missing.crt")
    assert PW not in err.value.render()


# -- secrets from files ------------------------------------------------------------------------------------------

def test_name_file_variants(tmp_path):
    (tmp_path / "pw").write_text(PW + "\n")
    (tmp_path / "url").write_text(f"postgresql://a:{PW}@h/d\r\n")
    s = build({}, {**COMPOSE, "DATABASE_PASSWORD": "", "DATABASE_PASSWORD_FILE": str(tmp_path / "pw")})
    assert _password(s.target_url) == PW
    assert "file DATABASE_PASSWORD_FILE" in s.origins["target_url"]
    s = build({}, {"DATABASE_URL_FILE": str(tmp_path / "url")})
    assert s.target_url == f"postgresql://a:{PW}@h/d" and s.origins["target_url"] == "file DATABASE_URL_FILE"


def test_unreadable_secret_file_names_the_variable_not_the_content(tmp_path):
    with pytest.raises(UsageError) as err:
        build({}, {"DATABASE_URL_FILE": str(tmp_path / "nope")})
    assert "DATABASE_URL_FILE" in err.value.message and err.value.exit_code == EXIT_USAGE


def _k8s_secret_volume(root: Path, items: dict[str, str]) -> Path:
    """The layout the kubelet writes: NAME -> ..data/NAME, ..data -> ..<timestamp>/."""
    stamp = root / "..2026_11_26_00_00_00.1"
    stamp.mkdir(parents=True)
    for name, value in items.items():
        (stamp / name).write_text(value)
    (root / "..data").symlink_to(stamp.name)
    for name in items:
        (root / name).symlink_to(f"..data/{name}")
    return root


def test_secrets_dir_supplies_any_variable(tmp_path):
    d = _k8s_secret_volume(tmp_path / "secrets", {"DATABASE_URL": f"postgresql://a:{PW}@h/d\n",
                                                   "PGVECTOR_PGCRYPTO_KEY": "k3y", "unrelated": "x"})
    s = build({}, {"HRIDAAI_MIGRATE_SECRETS_DIR": str(d)})
    assert _password(s.target_url) == PW and s.pgvector_pgcrypto_key == "k3y"
    assert s.origins["target_url"] == f"secrets dir {d}/DATABASE_URL" and s.secrets_dir == d


def test_env_beats_file_beats_secrets_dir(tmp_path):
    d = _k8s_secret_volume(tmp_path / "secrets", {"DATA_DIR": "/from-dir"})
    (tmp_path / "f").write_text("/from-file")
    env = {"HRIDAAI_MIGRATE_SECRETS_DIR": str(d), "DATA_DIR_FILE": str(tmp_path / "f")}
    assert build({}, env).data_dir == Path("/from-file")
    assert build({}, {**env, "DATA_DIR": "/from-env"}).data_dir == Path("/from-env")
    assert build({}, {"HRIDAAI_MIGRATE_SECRETS_DIR": str(d)}).data_dir == Path("/from-dir")


def test_missing_secrets_dir_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="HRIDAAI_MIGRATE_SECRETS_DIR"):
        build({}, {"HRIDAAI_MIGRATE_SECRETS_DIR": str(tmp_path / "absent")})


# -- precedence --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag,var,attr,convert", [
    ("data_dir", "DATA_DIR", "data_dir", Path), ("work_dir", "HRIDAAI_MIGRATE_WORK_DIR", "work_dir", Path),
    ("chroma_path", "CHROMA_DATA_PATH", "chroma_path", Path),
    ("target", "DATABASE_URL", "target_url", str), ("pgvector_target", "PGVECTOR_DB_URL", "pgvector_url", str),
])
def test_flag_beats_env_beats_default(flag, var, attr, convert):
    flag_value, env_value = "postgresql://f@h/flag", "postgresql://e@h/env"
    if convert is Path:
        flag_value, env_value = "/from-flag", "/from-env"
    default = getattr(build({}, {}), attr)
    assert getattr(build({}, {var: env_value}), attr) == convert(env_value) != default
    s = build({flag: flag_value}, {var: env_value})
    assert getattr(s, attr) == convert(flag_value)
    assert s.origins[attr] == f"flag --{flag.replace('_', '-')}"


def test_target_flag_beats_composition():
    assert build({"target": "postgresql://f@h/flag"}, COMPOSE).target_url == "postgresql://f@h/flag"


# -- masking -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dsn", [
    f"postgresql://u:{PW}@h:5432/d",
    f"postgresql://u:{PW}%40x@h/d?sslmode=require",
    f"postgresql://u:{PW}@x/y#z@h/d",
    f"postgresql://u:{PW}?@h/d",
    f"postgresql://u@h/d?password={PW}&sslmode=require",
    f"postgresql://u@h/d?sslkey=/k&sslpassword={PW}",
    f"host=h user=u password={PW} dbname=d",
    f"host=h password='{PW} x' dbname=d",
])
def test_mask_dsn_hides_every_password_form(dsn):
    masked = mask_dsn(dsn)
    assert PW not in masked and "****" in masked


def test_mask_dsn_keeps_what_is_not_secret():
    assert mask_dsn("postgresql://u:pw@db:5432/d?sslmode=verify-full") == "postgresql://u:****@db:5432/d?sslmode=verify-full"
    assert mask_dsn("postgresql://u@db/d") == "postgresql://u@db/d"
    assert mask_dsn(None) is None


def _all_secrets_env(tmp_path) -> dict:
    return {**COMPOSE, "PGVECTOR_DB_URL": f"postgresql://v:{PW}v@vec/d", "PGVECTOR_PGCRYPTO_KEY": PW + "k",
            "CHROMA_HTTP_HEADERS": f"Authorization=Bearer {PW}h", "DATA_DIR": str(tmp_path)}


def test_settings_repr_displayable_and_config_report_mask_every_secret(tmp_path):
    s = build({}, _all_secrets_env(tmp_path))
    assert s.pgvector_pgcrypto_key == PW + "k"  # the secret is there ...
    report = config_report.report(s)
    for text in (repr(s), json.dumps(s.displayable()), report.asstr(), json.dumps(report.asdict())):
        assert PW not in text  # ... and never shown
    assert report.settings["chroma_http_headers"] == {"Authorization": "****"}
    sk = build({}, {"DATABASE_TYPE": "sqlite+sqlcipher", "DATABASE_PASSWORD": PW})
    assert PW not in repr(sk) and sk.displayable()["sqlcipher_key"] == "****"


def test_config_notes():
    notes = config_report.notes(build({"target": f"postgresql://u:{PW}@db.example/d"}, {}))
    assert any("sslmode=prefer" in n and "verify-full" in n for n in notes)
    assert any("command line" in n for n in notes)
    assert any("DATA_DIR is not set" in n for n in notes)
    assert any("EMBEDDED" in n for n in config_report.notes(build({}, {"DATA_DIR": str(SMALL)})))
    assert not any("sslmode" in n for n in config_report.notes(build({}, {"DATABASE_URL": "postgresql://u@localhost/d"})))


def test_cli_config_text_and_json(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "PGVECTOR_", "CHROMA_"))}
    env.update(_all_secrets_env(tmp_path))
    text = run_cli("config", env=env)
    assert text.returncode == 0, text.stderr
    assert "composed from env DATABASE_TYPE" in text.stdout and "db.internal:5433" in text.stdout
    doc = json.loads(run_cli("config", "--json", "--data-dir", str(SMALL), env=env).stdout)
    assert doc["settings"]["data_dir"] == str(SMALL) and doc["origins"]["data_dir"] == "flag --data-dir"
    assert doc["derived"]["source_db"] == str(SMALL / "hridaai.db")
    bad = run_cli("config", env={**env, "PGVECTOR_HNSW_M": "x"})
    assert bad.returncode == EXIT_USAGE and "PGVECTOR_HNSW_M" in bad.stderr
    for out in (text, bad):
        assert PW not in out.stdout + out.stderr


def test_require_target_refuses_the_embedded_server():
    with pytest.raises(UsageError, match="HRIDAAI_MIGRATE_REQUIRE_TARGET") as err:
        build({}, {"HRIDAAI_MIGRATE_REQUIRE_TARGET": "true", "DATABASE_URL": "sqlite:////app/backend/data/x.db"})
    assert err.value.exit_code == EXIT_USAGE
    assert build({}, {"HRIDAAI_MIGRATE_REQUIRE_TARGET": "true", **COMPOSE}).require_target is True


def test_secret_file_that_is_not_text_is_a_usage_error(tmp_path):
    (tmp_path / "bin").write_bytes(b"\xff\xfe" + PW.encode())
    with pytest.raises(UsageError) as err:
        build({}, {"DATABASE_URL_FILE": str(tmp_path / "bin")})
    assert PW not in err.value.render() and "not UTF-8" in err.value.detail


def test_tls_note_for_a_server_named_in_the_host_parameter():
    notes = config_report.notes(build({}, {"DATABASE_URL": "postgresql://u@/d?host=db.example&sslmode=require"}))
    assert any("db.example is reached with sslmode=require" in n for n in notes)
    assert not any("sslmode" in n for n in config_report.notes(build({}, {"DATABASE_URL": "postgresql://u@/d?host=/run/pg"})))
