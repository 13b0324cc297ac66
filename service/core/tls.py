"""TLS contexts for every encrypted channel: the DICOM edge, the HTTPS API and the syslog sender.

One place decides what "TLS" means here, so the three channels cannot drift apart: TLS 1.2 or
newer (PS3.15 Annex B's BCP 195 profiles, RFC 5425 for syslog), forward-secret AEAD suites for
TLS 1.2 (TLS 1.3 suites are OpenSSL's, all AEAD), no compression (CRIME), no renegotiation (a
peer could otherwise present a second certificate mid-connection, after we checked the first).

A private key readable by anyone but its owner refuses to load, as the site key does: a key the
whole machine can read authenticates the whole machine.
"""

from __future__ import annotations

import hashlib
import ssl
import stat
from enum import StrEnum
from pathlib import Path

from service.core.errors import ConfigurationError

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
# TLS 1.2 suites: ECDHE/DHE key exchange (forward secrecy) with AES-GCM or ChaCha20-Poly1305;
# the "non-downgrading BCP 195" set that dcmtk offers by default is inside it.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"


class TlsConfigError(ConfigurationError):
    """A certificate, key or CA file is missing, unreadable, unsafe or does not match."""

    code = "tls-config"


class ClientCert(StrEnum):
    """What a server asks of its clients' certificates."""

    none = "none"  # server authentication only
    optional = "optional"  # verified against the CA when presented; policy decides per peer
    required = "required"  # the handshake fails without a valid one


def check_private_key(path: Path) -> Path:
    """The key file exists, is a regular file, and only its owner may read it (0600 or 0400)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise TlsConfigError(f"TLS private key {path} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise TlsConfigError(f"TLS private key {path} is not a regular file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TlsConfigError(f"TLS private key {path} is readable by others; chmod 600 it")
    return path


def _existing(path: Path, what: str) -> str:
    if not path.is_file():
        raise TlsConfigError(f"{what} {path} does not exist")
    return str(path)


def harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Apply the project's floor to any context (also one a library built, e.g. uvicorn's)."""
    ctx.minimum_version = MINIMUM_VERSION
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if ctx.protocol == ssl.PROTOCOL_TLS_SERVER:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path) -> None:
    check_private_key(key)
    try:
        ctx.load_cert_chain(_existing(cert, "TLS certificate"), str(key))
    except ssl.SSLError as exc:  # names the files, never their contents
        raise TlsConfigError(f"TLS certificate {cert} and key {key} do not load together "
                             f"({exc.reason or 'unreadable'})") from None


def _load_ca(ctx: ssl.SSLContext, ca: Path) -> None:
    try:
        ctx.load_verify_locations(cafile=_existing(ca, "TLS CA bundle"))
    except ssl.SSLError as exc:
        raise TlsConfigError(f"TLS CA bundle {ca} does not load ({exc.reason or 'unreadable'})"
                             ) from None


def server_context(cert: Path, key: Path, ca: Path | None = None, *,
                   client_cert: ClientCert = ClientCert.none) -> ssl.SSLContext:
    """A server context presenting ``cert``; client certificates verified against ``ca``.

    ``ca`` may hold CA certificates or the peers' own (self-signed) certificates: OpenSSL
    trusts either as an anchor."""
    ctx = harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    _load_chain(ctx, cert, key)
    if client_cert is not ClientCert.none:
        if ca is None:
            raise TlsConfigError("verifying client certificates needs a CA bundle")
        _load_ca(ctx, ca)
        ctx.verify_mode = (ssl.CERT_REQUIRED if client_cert is ClientCert.required
                           else ssl.CERT_OPTIONAL)
    return ctx


def client_context(ca: Path | None, cert: Path | None = None, key: Path | None = None, *,
                   check_hostname: bool = True,
                   context_class: type[ssl.SSLContext] = ssl.SSLContext) -> ssl.SSLContext:
    """A client context verifying the server against ``ca`` (the system store when None) and,
    with ``cert``/``key``, presenting our own certificate (mutual TLS). ``context_class`` lets
    a caller add checks after the handshake (``service.dicom.tls`` pins certificates)."""
    ctx = harden(context_class(ssl.PROTOCOL_TLS_CLIENT))  # CERT_REQUIRED, check_hostname
    if ca is None:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        _load_ca(ctx, ca)
    if (cert is None) != (key is None):
        raise TlsConfigError("a client certificate needs both the certificate and its key")
    if cert is not None and key is not None:
        _load_chain(ctx, cert, key)
    ctx.check_hostname = check_hostname
    return ctx


def sha256_fingerprint(der: bytes) -> str:
    """Lower-case hex SHA-256 of a DER certificate (``openssl x509 -fingerprint -sha256``
    prints the same digits, upper-case with colons; ``normalise_fingerprint`` accepts both)."""
    return hashlib.sha256(der).hexdigest()


def normalise_fingerprint(text: str) -> str:
    """Accept ``AB:CD:...``, ``abcd...`` or ``sha256:abcd...``; refuse anything but 64 hex."""
    value = text.strip().lower().removeprefix("sha256:").replace(":", "")
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise TlsConfigError("a certificate pin must be a SHA-256 fingerprint (64 hex digits)")
    return value
