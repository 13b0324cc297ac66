"""The pure parts of TLS: the per-node decision, key-file checks, settings, context floors."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from service.core.config import Settings
from service.core.tls import (
    TlsConfigError,
    check_private_key,
    client_context,
    normalise_fingerprint,
    server_context,
)
from service.dicom.tls import (
    DicomTlsFiles,
    NodeTls,
    PeerCertificate,
    TlsMode,
    TlsRefusal,
    check_peer,
)
from tests.peers.certs import TestPki


@pytest.fixture(scope="module")
def modality(pki: TestPki) -> PeerCertificate:
    return PeerCertificate.from_der(pki.leaf("MODALITY").der)


def test_certificate_names(modality: PeerCertificate) -> None:
    assert modality.names == {"modality", "localhost"}  # CN and the DNS SubjectAltName


@pytest.mark.parametrize(("policy", "tls", "cert", "expected"), [
    (NodeTls(), False, False, None),
    (NodeTls(mode=TlsMode.tls), False, False, TlsRefusal.tls_required),
    (NodeTls(mode=TlsMode.tls, allow_plain=True), False, False, None),
    (NodeTls(mode=TlsMode.tls), True, False, None),
    (NodeTls(mode=TlsMode.mtls), True, False, TlsRefusal.client_certificate_required),
    (NodeTls(mode=TlsMode.mtls), True, True, None),  # CN MODALITY = the AE title
    (NodeTls(mode=TlsMode.mtls, pin_name="localhost"), True, True, None),  # a SAN
    (NodeTls(mode=TlsMode.mtls, pin_name="PACS"), True, True, TlsRefusal.ae_mismatch),
    (NodeTls(mode=TlsMode.tls, pin_sha256="00" * 32), True, True, TlsRefusal.pin_mismatch),
    (NodeTls(mode=TlsMode.tls, pin_sha256="00" * 32), True, False,
     TlsRefusal.client_certificate_required),
])
def test_check_peer(policy: NodeTls, tls: bool, cert: bool, expected: TlsRefusal | None,
                    modality: PeerCertificate) -> None:
    got = check_peer(policy, ae_title="MODALITY", tls=tls, cert=modality if cert else None)
    assert got is expected


def test_pin_by_fingerprint_in_any_spelling(modality: PeerCertificate) -> None:
    colons = ":".join(modality.sha256[i:i + 2] for i in range(0, 64, 2)).upper()
    for spelling in (modality.sha256, colons, f"sha256:{modality.sha256}"):
        policy = NodeTls(mode=TlsMode.mtls, pin_sha256=spelling)
        assert check_peer(policy, ae_title="MODALITY", tls=True, cert=modality) is None
    with pytest.raises(TlsConfigError):
        NodeTls(pin_sha256="not a fingerprint")


def test_pinned_elsewhere_beats_a_lax_policy(modality: PeerCertificate) -> None:
    pins = {modality.sha256: "MODALITY"}
    assert check_peer(NodeTls(), ae_title="OTHER", tls=True, cert=modality,
                      pinned_elsewhere=pins) is TlsRefusal.ae_mismatch
    assert check_peer(NodeTls(), ae_title="MODALITY", tls=True, cert=modality,
                      pinned_elsewhere=pins) is None


def test_private_key_must_be_private(pki: TestPki, tmp_path: Path) -> None:
    leaf = pki.leaf("MODALITY")
    assert check_private_key(leaf.key) == leaf.key
    loose = tmp_path / "loose.key"
    loose.write_bytes(leaf.key.read_bytes())
    os.chmod(loose, 0o640)
    with pytest.raises(TlsConfigError, match="readable by others"):
        check_private_key(loose)
    with pytest.raises(TlsConfigError, match="readable by others"):
        server_context(leaf.cert, loose)
    with pytest.raises(TlsConfigError, match="does not exist"):
        check_private_key(tmp_path / "missing.key")


def test_mismatched_key_and_certificate(pki: TestPki) -> None:
    with pytest.raises(TlsConfigError, match="do not load together"):
        server_context(pki.leaf("MODALITY").cert, pki.leaf("OTHERNODE").key)


def test_contexts_have_the_floor(pki: TestPki) -> None:
    leaf = pki.leaf("MODALITY")
    for ctx in (server_context(leaf.cert, leaf.key), client_context(pki.ca)):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        assert ctx.options & ssl.OP_NO_COMPRESSION
        assert ctx.options & ssl.OP_NO_RENEGOTIATION
        suites = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
        assert suites and all("GCM" in s or "CHACHA20" in s for s in suites)
        assert all(s.startswith(("ECDHE", "DHE")) for s in suites)
    assert client_context(pki.ca).verify_mode == ssl.CERT_REQUIRED


def test_dicom_tls_files_from_settings(pki: TestPki, tmp_path: Path) -> None:
    leaf = pki.leaf("DEIDGATE")
    assert DicomTlsFiles.from_settings(Settings(home=tmp_path)) is None
    with pytest.raises(TlsConfigError, match="both"):
        DicomTlsFiles.from_settings(Settings(home=tmp_path, dicom_tls_cert=leaf.cert))
    files = DicomTlsFiles.from_settings(Settings(home=tmp_path, dicom_tls_cert=leaf.cert,
                                                 dicom_tls_key=leaf.key, dicom_tls_ca=pki.ca))
    assert files == DicomTlsFiles(leaf.cert, leaf.key, pki.ca)


def test_fingerprint_normalisation() -> None:
    assert normalise_fingerprint("AB" * 32) == "ab" * 32
    with pytest.raises(TlsConfigError):
        normalise_fingerprint("ab" * 31)
