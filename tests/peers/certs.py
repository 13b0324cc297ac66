"""A throw-away PKI for TLS tests: two CAs and leaf certificates made on demand with
``cryptography``; nothing is committed, keys are written 0600 into a temporary folder.

``TestPki(folder).leaf("MODALITY")`` is a certificate with CN=MODALITY and SubjectAltNames
localhost / 127.0.0.1 signed by the main CA; ``ca="other"`` signs it with a CA nobody trusts;
``valid_days=(-10, -1)`` makes it expired.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Leaf:
    cert: Path
    key: Path
    der: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


def _key() -> rsa.RSAPrivateKey:
    # RSA: dcmtk's default BCP 195 profile offers only RSA suites for TLS 1.2
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write(folder: Path, stem: str, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> Leaf:
    key_path, cert_path = folder / f"{stem}.key", folder / f"{stem}.crt"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Leaf(cert_path, key_path, cert.public_bytes(serialization.Encoding.DER))


class TestPki:
    __test__ = False  # not a pytest test class

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._now = dt.datetime.now(dt.UTC)
        self._cas = {name: self._make_ca(name) for name in ("main", "other")}
        self._leaves: dict[tuple[object, ...], Leaf] = {}

    def _make_ca(self, name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate, Path]:
        key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"deidgate test CA {name}")])
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(self._now - dt.timedelta(days=1))
                .not_valid_after(self._now + dt.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False),
                    critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        return key, cert, _write(self.folder, f"ca-{name}", key, cert).cert

    @property
    def ca(self) -> Path:
        """The CA bundle every peer trusts."""
        return self._cas["main"][2]

    @property
    def other_ca(self) -> Path:
        return self._cas["other"][2]

    def leaf(self, cn: str, *, ca: str = "main", valid_days: tuple[int, int] = (-1, 30),
             sans: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Leaf:
        spec = (cn, ca, valid_days, sans)
        if spec not in self._leaves:
            ca_key, ca_cert, _ = self._cas[ca]
            key = _key()
            alt: list[x509.GeneralName] = []
            for s in sans:
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(s)))
                except ValueError:
                    alt.append(x509.DNSName(s))
            builder = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(self._now + dt.timedelta(days=valid_days[0]))
                .not_valid_after(self._now + dt.timedelta(days=valid_days[1]))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), critical=False))
            if alt:
                builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
            stem = f"{cn}-{ca}-{valid_days[0]}_{valid_days[1]}-{len(self._leaves)}"
            self._leaves[spec] = _write(self.folder, stem, key,
                                        builder.sign(ca_key, hashes.SHA256()))
        return self._leaves[spec]
