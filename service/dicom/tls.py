"""DICOM TLS (PS3.15 Annex B, BCP 195 profiles): the listener's and the SCU's secure transport.

A TLS association passes three gates, each refusing with its own ``TlsRefusal`` code that the
listener stores in ``dicom_association_attempts.reason`` and the SCU raises as ``TlsRefused``
(the SCU side is ``service.dicom.tls_scu``):

1. the handshake, done in the connection's own thread under ``handshake_timeout``. pynetdicom
   does it on the accept thread, where one peer that connects and sends nothing stops every
   other association (``TlsAssociationServer`` moves it);
2. the certificate chain against the CA bundle (OpenSSL; a bundle of the nodes' own
   certificates works as well as a CA);
3. per association, once the A-ASSOCIATE-RQ has named the calling AE and before anything is
   accepted (``TlsGuard.check`` in the EVT_REQUESTED handler): that node's ``NodeTls`` policy.

``NodeTls`` is what a PACS node or an allow-list entry will carry. A later revision on the
dicom branch adds to both ``dicom_pacs_nodes`` and ``dicom_allowed_callers``: ``tls_mode``
String(16) NOT NULL default 'off' (CHECK in off, tls, mtls-required), ``tls_pin_sha256``
String(64) NULL (lower-case hex), ``tls_pin_name`` String(64) NULL, ``tls_allow_plain`` Boolean
NOT NULL default false; ``dicom_association_attempts.reason`` (String(64)) already holds every
refusal code. Pinning binds a certificate to one AE title: by SHA-256 fingerprint, or by a name
that must be the certificate's subject CN or one of its DNS/URI SubjectAltNames;
``mtls-required`` without an explicit pin pins the name to the node's AE title. The SCU never
falls back to plain DICOM (``allow_plain`` is for incoming associations only).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from service.core.config import Settings
from service.core.errors import ConfigurationError
from service.core.tls import (
    ClientCert,
    TlsConfigError,
    normalise_fingerprint,
    server_context,
    sha256_fingerprint,
)

log = logging.getLogger(__name__)

TLS_RECORD_HANDSHAKE = 0x16  # the first byte of every TLS ClientHello; DICOM's A-ASSOCIATE-RQ is 1


class TlsMode(StrEnum):
    off = "off"  # plain DICOM (TLS accepted too when the peer uses the TLS port)
    tls = "tls"  # TLS required; the peer's certificate is checked only when pinned
    mtls = "mtls-required"  # TLS with a valid client certificate pinned to the AE title


class TlsRefusal(StrEnum):
    """Why a connection or association was refused; stored as-is (short, no PHI)."""

    plain_on_tls_port = "tls-plain-connection"  # plain DICOM sent to the TLS port
    tls_required = "tls-required"  # plain association from a node whose policy needs TLS
    protocol_version = "tls-protocol-version"  # TLS 1.1 or older offered
    unknown_ca = "tls-unknown-ca"  # the chain does not end in a trusted CA or node cert
    expired = "tls-certificate-expired"
    not_yet_valid = "tls-certificate-not-yet-valid"
    bad_certificate = "tls-certificate-invalid"  # any other verification failure
    hostname_mismatch = "tls-hostname-mismatch"  # SCU: the node's cert does not name its host
    client_certificate_required = "tls-client-certificate-required"
    pin_mismatch = "tls-certificate-pin-mismatch"  # fingerprint differs from the node's pin
    ae_mismatch = "tls-certificate-ae-mismatch"  # certificate names (or is pinned to) another AE
    handshake_timeout = "tls-handshake-timeout"
    handshake_failed = "tls-handshake-failed"  # no shared cipher, peer hung up, ...


class TlsRefused(ConfigurationError):
    """The SCU's peer failed a TLS check: an operator must fix a certificate or a pin."""

    code = "tls-refused"

    def __init__(self, refusal: TlsRefusal, node: str) -> None:
        super().__init__(f"TLS refused for node {node}: {refusal.value}", code=refusal.value)
        self.refusal = refusal


@dataclass(frozen=True)
class NodeTls:
    """One node's TLS policy (a PACS node or a calling AE on the allow-list)."""

    mode: TlsMode = TlsMode.off
    pin_sha256: str | None = None
    pin_name: str | None = None
    allow_plain: bool = False  # incoming only: accept plain associations during a migration

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", TlsMode(self.mode))
        if self.pin_sha256 is not None:
            object.__setattr__(self, "pin_sha256", normalise_fingerprint(self.pin_sha256))

    def name_pin(self, ae_title: str) -> str | None:
        if self.pin_name:
            return self.pin_name
        if self.mode is TlsMode.mtls and self.pin_sha256 is None:
            return ae_title
        return None

    def needs_certificate(self) -> bool:
        return self.mode is TlsMode.mtls or bool(self.pin_sha256 or self.pin_name)


@dataclass(frozen=True)
class PeerCertificate:
    """What the checks need from a peer's certificate; parsed once from DER."""

    sha256: str
    names: frozenset[str]  # subject CNs and DNS/URI SubjectAltNames, case-folded

    @classmethod
    def from_der(cls, der: bytes) -> PeerCertificate:
        cert = x509.load_der_x509_certificate(der)
        names = {str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names.update(san.get_values_for_type(x509.DNSName))
            names.update(san.get_values_for_type(x509.UniformResourceIdentifier))
        except x509.ExtensionNotFound:
            pass
        return cls(sha256_fingerprint(der), frozenset(n.casefold() for n in names))


def certificate_fingerprint(path: Path) -> str:
    """The SHA-256 pin of a PEM (or DER) certificate file, as ``NodeTls.pin_sha256`` holds it."""
    try:
        data = Path(path).read_bytes()
        cert = (x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data
                else x509.load_der_x509_certificate(data))
    except (OSError, ValueError):
        raise ValueError(f"{path} is not a readable certificate") from None
    return sha256_fingerprint(cert.public_bytes(Encoding.DER))


def check_peer(policy: NodeTls, *, ae_title: str, tls: bool, cert: PeerCertificate | None,
               pinned_elsewhere: Mapping[str, str] | None = None) -> TlsRefusal | None:
    """The per-association decision (pure, so every rule is tested without a socket).

    ``pinned_elsewhere`` maps pinned fingerprints to their AE titles: a certificate pinned to
    one node is refused under any other AE title, whatever that title's own policy."""
    if not tls:
        if policy.mode is TlsMode.off or policy.allow_plain:
            return None
        return TlsRefusal.tls_required
    if cert is not None and pinned_elsewhere:
        owner = pinned_elsewhere.get(cert.sha256)
        if owner is not None and owner != ae_title:
            return TlsRefusal.ae_mismatch
    if not policy.needs_certificate():
        return None
    if cert is None:
        return TlsRefusal.client_certificate_required
    if policy.pin_sha256 is not None and cert.sha256 != policy.pin_sha256:
        return TlsRefusal.pin_mismatch
    name = policy.name_pin(ae_title)
    if name is not None and name.casefold() not in cert.names:
        return TlsRefusal.ae_mismatch
    return None


# --- classifying OpenSSL's failures ----------------------------------------------------------

_VERIFY_CODES = {  # X509_V_ERR_*
    9: TlsRefusal.not_yet_valid, 10: TlsRefusal.expired,
    2: TlsRefusal.unknown_ca, 18: TlsRefusal.unknown_ca, 19: TlsRefusal.unknown_ca,
    20: TlsRefusal.unknown_ca, 21: TlsRefusal.unknown_ca,
    62: TlsRefusal.hostname_mismatch, 64: TlsRefusal.hostname_mismatch,
}
_REASONS = {  # OpenSSL reason names, as ssl.SSLError.reason gives them (ours, or a peer's alert)
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": TlsRefusal.client_certificate_required,
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": TlsRefusal.client_certificate_required,
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": TlsRefusal.expired,
    "TLSV1_ALERT_UNKNOWN_CA": TlsRefusal.unknown_ca,
    "SSLV3_ALERT_BAD_CERTIFICATE": TlsRefusal.bad_certificate,
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": TlsRefusal.bad_certificate,
    "UNSUPPORTED_PROTOCOL": TlsRefusal.protocol_version,
    "TLSV1_ALERT_PROTOCOL_VERSION": TlsRefusal.protocol_version,
    "NO_PROTOCOLS_AVAILABLE": TlsRefusal.protocol_version,
    "WRONG_SSL_VERSION": TlsRefusal.protocol_version,
    "WRONG_VERSION_NUMBER": TlsRefusal.plain_on_tls_port,
    "HTTP_REQUEST": TlsRefusal.plain_on_tls_port,
}


def classify(exc: BaseException) -> TlsRefusal:
    """Map a handshake exception to its refusal code."""
    if isinstance(exc, PeerRefused):
        return exc.refusal
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _VERIFY_CODES.get(exc.verify_code, TlsRefusal.bad_certificate)
    if isinstance(exc, TimeoutError):
        return TlsRefusal.handshake_timeout
    if isinstance(exc, ssl.SSLError) and exc.reason in _REASONS:
        return _REASONS[exc.reason]
    return TlsRefusal.handshake_failed


class PeerRefused(ssl.SSLError):
    """Raised from inside the handshake when our own check (a pin) refuses the peer."""

    def __init__(self, refusal: TlsRefusal) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal


# --- settings ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class DicomTlsFiles:
    cert: Path
    key: Path
    ca: Path | None

    @classmethod
    def from_settings(cls, settings: Settings) -> DicomTlsFiles | None:
        """None when DICOM TLS is not configured; an error when it is half configured."""
        cert, key, ca = settings.dicom_tls_cert, settings.dicom_tls_key, settings.dicom_tls_ca
        if cert is None and key is None and ca is None:
            return None
        if cert is None or key is None:
            raise TlsConfigError("DICOM TLS needs both DEIDGATE_DICOM_TLS_CERT and "
                                 "DEIDGATE_DICOM_TLS_KEY")
        return cls(cert, key, ca)


def listener_context(files: DicomTlsFiles) -> ssl.SSLContext:
    """Client certificates are verified when presented (CERT_OPTIONAL with a CA bundle); each
    node's policy then says whether one was needed and whose it must be."""
    return server_context(files.cert, files.key, files.ca,
                          client_cert=ClientCert.optional if files.ca else ClientCert.none)


# --- the listener side ------------------------------------------------------------------------

@dataclass(frozen=True)
class Refusal:
    reason: TlsRefusal
    peer_host: str
    calling_ae: str = ""
    called_ae: str = ""


OnRefused = Callable[[Refusal], None]


def peer_of(assoc: Any) -> tuple[bool, PeerCertificate | None]:
    """(is TLS, the verified peer certificate or None) for an acceptor association."""
    sock = assoc.dul.socket.socket
    if not isinstance(sock, ssl.SSLSocket):
        return False, None
    der = sock.getpeercert(binary_form=True)
    return True, PeerCertificate.from_der(der) if der else None


class TlsGuard:
    """The listener's per-association check: call ``check(assoc)`` from the EVT_REQUESTED
    handler after the allow-list check; on a refusal record it and call ``reject(assoc, r)``.

    ``policy_for(calling_ae)`` gives that caller's policy (None: ``NodeTls()``, plain allowed);
    ``pins()`` maps every pinned fingerprint to its AE title. Both are read per association,
    so the caller caches them as the allow-list is cached."""

    def __init__(self, policy_for: Callable[[str], NodeTls | None],
                 pins: Callable[[], Mapping[str, str]] = dict) -> None:
        self.policy_for = policy_for
        self.pins = pins

    def check(self, assoc: Any) -> Refusal | None:
        rq = assoc.requestor.primitive
        calling = str(rq.calling_ae_title).strip()
        is_tls, cert = peer_of(assoc)
        policy = self.policy_for(calling) or NodeTls()
        reason = check_peer(policy, ae_title=calling, tls=is_tls, cert=cert,
                            pinned_elsewhere=self.pins())
        if reason is None:
            return None
        return Refusal(reason, str(assoc.requestor.address), calling,
                       str(rq.called_ae_title).strip())

    @staticmethod
    def reject(assoc: Any, refusal: Refusal) -> None:
        """A-ASSOCIATE-RJ, rejected-permanent by the service user: "calling AE title not
        recognised" when the certificate belongs to another AE, "no reason given" otherwise."""
        ae_reason = 0x03 if refusal.reason in (TlsRefusal.ae_mismatch,
                                               TlsRefusal.pin_mismatch) else 0x01
        assoc.acse.send_reject(0x01, 0x01, ae_reason)
        assoc.kill()
