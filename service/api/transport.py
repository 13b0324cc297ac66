"""HTTPS for the API and the web UI: uvicorn's TLS settings, HSTS, and refusing plain HTTP.

Outside development every request must arrive over HTTPS (ASGI ``scope["scheme"]``), with one
exception: ``GET /api/v1/health`` from a loopback address, so a container health check on the
same host needs no certificate. A plain request is answered 403 ``https-required`` and is not
redirected: by the time a redirect is sent, the request (a token, a session cookie) has already
crossed the network in clear, and answering it would teach clients that plain works.

Behind a TLS-terminating proxy, uvicorn's own proxy-header handling (``forwarded_allow_ips``,
loopback by default) sets the scheme and client address from that proxy's headers; nothing
here trusts ``X-Forwarded-*`` by itself.

HSTS (RFC 6797) is sent on HTTPS responses only, as the RFC requires; without
``includeSubDomains``, which would bind every other host in the hospital's domain to HTTPS.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.config import Settings
from service.core.fsync import write_durably
from service.core.tls import TLS12_CIPHERS, TlsConfigError, check_private_key, harden

HEALTH_PATH = "/api/v1/health"
_REFUSAL = json.dumps({"error": {
    "code": "https-required",
    "message": "this service answers over HTTPS only"}}).encode()


def _loopback(client: tuple[str, int] | None) -> bool:
    if not client:
        return False
    try:
        return ipaddress.ip_address(client[0].removeprefix("::ffff:")).is_loopback
    except ValueError:  # a Unix socket path or a name: not provably local
        return False


class TransportSecurity:
    """Pure ASGI middleware (no body buffering; streaming responses pass through)."""

    def __init__(self, app: ASGIApp, *, development: bool, hsts_max_age_s: int,
                 health_path: str = HEALTH_PATH) -> None:
        self.app = app
        self.development = development
        self.health_path = health_path
        self.hsts = (f"max-age={hsts_max_age_s}".encode() if hsts_max_age_s > 0 else None)

    def _allowed_plain(self, scope: Scope) -> bool:
        return (self.development
                or (scope["type"] == "http" and scope["path"] == self.health_path
                    and scope.get("method") in ("GET", "HEAD") and _loopback(scope.get("client"))))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        secure = scope.get("scheme") in ("https", "wss")
        if not secure and not self._allowed_plain(scope):
            await self._refuse(scope, send)
            return
        if not secure or self.hsts is None:
            await self.app(scope, receive, send)
            return
        hsts = self.hsts

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", [])
                           if h[0].lower() != b"strict-transport-security"]
                message = {**message, "headers": [*headers,
                                                  (b"strict-transport-security", hsts)]}
            await send(message)

        await self.app(scope, receive, send_with_hsts)

    @staticmethod
    async def _refuse(scope: Scope, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": 403, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(_REFUSAL)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": _REFUSAL})


def install(app: FastAPI, settings: Settings) -> None:
    """Call from ``create_app`` (outermost middleware: added last)."""
    app.add_middleware(TransportSecurity,  # type: ignore[arg-type]  # starlette's factory typing
                       development=settings.environment == "development",
                       hsts_max_age_s=settings.hsts_max_age_s)


def self_signed(settings: Settings) -> tuple[Path, Path]:
    """A self-signed certificate for this host in ``HOME/tls`` (made once, key 0600), so the
    embedded default speaks HTTPS with no setup; browsers warn until the hospital's certificate
    replaces it (``DEIDGATE_HTTPS_CERT``/``_KEY``)."""
    import datetime
    import socket

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = settings.home / "tls"
    cert, key = folder / "self-signed.crt", folder / "self-signed.key"
    if cert.is_file() and key.is_file():
        return cert, key
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    host = socket.gethostname() or "localhost"
    pk = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])])
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(host), x509.DNSName("localhost"),
                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    built = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
             .public_key(pk.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=825))
             .add_extension(x509.SubjectAlternativeName(sans), critical=False)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .sign(pk, hashes.SHA256()))
    # 0600 whatever an earlier file's mode was (it is replaced, never truncated in place)
    write_durably(key, pk.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    cert.write_bytes(built.public_bytes(serialization.Encoding.PEM))
    return cert, key


def https_paths(settings: Settings) -> tuple[Path, Path] | None:
    """The certificate and key the API serves with: configured ones, else (outside
    development, ``https_self_signed``) a generated self-signed pair; None: plain HTTP."""
    if settings.https_cert is not None or settings.https_key is not None:
        if settings.https_cert is None or settings.https_key is None:
            raise TlsConfigError("HTTPS needs both DEIDGATE_HTTPS_CERT and DEIDGATE_HTTPS_KEY")
        return settings.https_cert, settings.https_key
    if settings.environment == "development" or not settings.https_self_signed:
        return None
    return self_signed(settings)


def uvicorn_config(app: Any, settings: Settings, **kwargs: Any) -> uvicorn.Config:
    """uvicorn's Config for the API, loaded, with HTTPS when a certificate is configured.

    uvicorn builds its own SSLContext; it is hardened here after ``load()`` (TLS 1.2 floor, the
    project's suites, no compression or renegotiation), so ``serve`` must use this config as is
    (``uvicorn.Server(config)`` skips ``load()`` for a loaded config)."""
    cert, key = settings.https_cert, settings.https_key
    if (cert is None) != (key is None):
        raise TlsConfigError("HTTPS needs both DEIDGATE_HTTPS_CERT and DEIDGATE_HTTPS_KEY")
    kwargs.setdefault("host", settings.api_host)
    kwargs.setdefault("port", settings.api_port)
    if cert is not None and key is not None:
        if not cert.is_file():
            raise TlsConfigError(f"HTTPS certificate {cert} does not exist")
        check_private_key(key)
        kwargs.update(ssl_certfile=str(cert), ssl_keyfile=str(key), ssl_ciphers=TLS12_CIPHERS)
    config = uvicorn.Config(app, **kwargs)
    config.load()
    if config.ssl is not None:
        harden(config.ssl)
    return config
