"""HTTPS for the API: a real uvicorn over TLS and plain, the real app, httpx as the client."""

from __future__ import annotations

import asyncio
import socket
import ssl
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from service.api.app import create_app
from service.api.transport import TransportSecurity, install, uvicorn_config
from service.core.config import Settings
from service.core.tls import TlsConfigError
from tests.peers.certs import TestPki
from tests.peers.net import free_port, uvicorn_in_thread

pytestmark = pytest.mark.integration


def _settings(home: Path, pki: TestPki | None = None, **kw: object) -> Settings:
    if pki is not None:
        leaf = pki.leaf("deidgate.example")
        kw.update(https_cert=leaf.cert, https_key=leaf.key)
    s = Settings(home=home, **kw)  # type: ignore[arg-type]
    s.ensure_dirs()
    return s


@contextmanager
def api(settings: Settings,
        adjust: Callable[[uvicorn.Config], None] | None = None) -> Iterator[int]:
    app = create_app(settings)
    install(app, settings)
    port = free_port()
    config = uvicorn_config(app, settings, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off")
    if adjust is not None:
        adjust(config)
    with uvicorn_in_thread(config) as bound:
        yield bound


def test_https_serves_everything_with_hsts(home: Path, pki: TestPki) -> None:
    trust = ssl.create_default_context(cafile=pki.ca)
    with api(_settings(home, pki)) as port, httpx.Client(verify=trust) as c:
        base = f"https://localhost:{port}"
        health = c.get(f"{base}/api/v1/health")
        jobs = c.get(f"{base}/api/v1/jobs")
    assert health.status_code == 200
    assert health.headers["strict-transport-security"] == "max-age=31536000"
    assert jobs.status_code == 401  # reached the API (no token), not refused for transport
    assert jobs.headers["strict-transport-security"] == "max-age=31536000"


def test_plain_http_refused_in_production_except_loopback_health(home: Path) -> None:
    with api(_settings(home)) as port, httpx.Client() as c:
        base = f"http://127.0.0.1:{port}"
        health = c.get(f"{base}/api/v1/health")
        jobs = c.get(f"{base}/api/v1/jobs")
        docs = c.get(f"{base}/docs")
        post = c.post(f"{base}/api/v1/health")
    assert health.status_code == 200
    assert "strict-transport-security" not in health.headers  # never over plain (RFC 6797)
    for refused in (jobs, docs, post):
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "https-required"


def test_plain_health_from_another_host_is_refused(home: Path) -> None:
    """The same app seen from a non-loopback client address (ASGI scope, in process)."""
    settings = _settings(home)
    app = create_app(settings)
    install(app, settings)

    async def status_from(client: tuple[str, int]) -> int:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            return (await c.get("/api/v1/health")).status_code

    for client, expected in ((("10.20.30.40", 5000), 403), (("::1", 5000), 200),
                             (("::ffff:127.0.0.1", 5000), 200), (("127.0.0.9", 1), 200)):
        assert asyncio.run(status_from(client)) == expected, client


def test_development_allows_plain(home: Path) -> None:
    with api(_settings(home, environment="development")) as port, httpx.Client() as c:
        assert c.get(f"http://127.0.0.1:{port}/api/v1/jobs").status_code == 401


def test_tls_1_1_refused_by_the_api(home: Path, pki: TestPki) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.minimum_version = ssl.TLSVersion.TLSv1
        client.maximum_version = ssl.TLSVersion.TLSv1_1
    client.set_ciphers("DEFAULT:@SECLEVEL=0")
    client.load_verify_locations(pki.ca)

    def handshake(port: int) -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                client.wrap_socket(raw, server_hostname="localhost") as tls:
            return str(tls.version())

    settings = _settings(home, pki)
    with api(settings) as port, pytest.raises(ssl.SSLError):
        handshake(port)  # asyncio closes without an alert: the client reads EOF

    def lax(config: uvicorn.Config) -> None:  # the control: uvicorn as built, floor removed
        assert config.ssl is not None and config.ssl.minimum_version == ssl.TLSVersion.TLSv1_2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            config.ssl.minimum_version = ssl.TLSVersion.TLSv1
        config.ssl.set_ciphers("DEFAULT:@SECLEVEL=0")

    with api(settings, adjust=lax) as port:
        assert handshake(port) == "TLSv1.1"


def test_hsts_can_be_switched_off_and_is_never_doubled() -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"strict-transport-security", b"max-age=1")]})
        await send({"type": "http.response.body", "body": b""})

    async def capture(message):  # type: ignore[no-untyped-def]
        if message["type"] == "http.response.start":
            seen.append(message["headers"])

    async def noop():  # type: ignore[no-untyped-def]
        return {"type": "http.request"}

    scope = {"type": "http", "scheme": "https", "path": "/", "method": "GET", "headers": []}
    asyncio.run(TransportSecurity(app, development=False, hsts_max_age_s=600)(
        scope, noop, capture))
    asyncio.run(TransportSecurity(app, development=False, hsts_max_age_s=0)(
        scope, noop, capture))
    assert seen[0] == [(b"strict-transport-security", b"max-age=600")]
    assert seen[1] == [(b"strict-transport-security", b"max-age=1")]  # the app's own, untouched


def test_half_configured_https_refuses_to_start(home: Path, pki: TestPki) -> None:
    leaf = pki.leaf("deidgate.example")
    with pytest.raises(TlsConfigError, match="both"):
        uvicorn_config(None, _settings(home, https_cert=leaf.cert))
    loose = home / "loose.key"
    loose.write_bytes(leaf.key.read_bytes())
    loose.chmod(0o644)
    with pytest.raises(TlsConfigError, match="readable by others"):
        uvicorn_config(None, _settings(home, https_cert=leaf.cert, https_key=loose))
