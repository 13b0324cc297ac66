"""The listener side of DICOM TLS against real TLS clients: dcmtk's echoscu/storescu +tls,
Orthanc's DICOM TLS, and Python's ssl for what dcmtk cannot be made to do (TLS 1.1, silence)."""

from __future__ import annotations

import json
import socket
import ssl
import time
import warnings
from pathlib import Path

import pytest

from service.dicom.tls import DicomTlsFiles, NodeTls, TlsMode, TlsRefusal, listener_context
from tests.peers.certs import TestPki
from tests.peers.orthanc import orthanc_server
from tests.security.dicom_harness import echoscu, small_exam, storescu, tls_options, tls_scp

pytestmark = pytest.mark.integration

MTLS = NodeTls(mode=TlsMode.mtls)


@pytest.fixture(scope="module")
def ctx(pki: TestPki) -> ssl.SSLContext:
    server = pki.leaf("DEIDGATE")
    return listener_context(DicomTlsFiles(server.cert, server.key, pki.ca))


def test_mutual_tls_echo_and_store(ctx: ssl.SSLContext, pki: TestPki, tmp_path: Path) -> None:
    exam = small_exam(tmp_path, views=2)
    with tls_scp(ctx, {"MODALITY": MTLS}) as scp:
        echo = echoscu(scp.port, tls_options(pki.leaf("MODALITY"), pki.ca))
        store = storescu(scp.port, tls_options(pki.leaf("MODALITY"), pki.ca), exam.files)
    assert echo.returncode == 0, echo.stderr
    assert store.returncode == 0, store.stderr
    assert scp.echoes == 1
    assert sorted(scp.stored) == sorted(exam.sop_uids)
    assert scp.refusals == []


@pytest.mark.parametrize(("leaf", "reason"), [
    ({"cn": "MODALITY", "ca": "other"}, TlsRefusal.unknown_ca),
    ({"cn": "MODALITY", "valid_days": (-10, -1)}, TlsRefusal.expired),
    ({"cn": "MODALITY", "valid_days": (2, 30)}, TlsRefusal.not_yet_valid),
])
def test_bad_client_certificate_is_refused_in_the_handshake(
        ctx: ssl.SSLContext, pki: TestPki, leaf: dict, reason: TlsRefusal) -> None:
    with tls_scp(ctx, {"MODALITY": MTLS}) as scp:
        res = echoscu(scp.port, tls_options(pki.leaf(**leaf), pki.ca))
        refusal = scp.wait_refusal()
    assert res.returncode != 0
    assert refusal.reason is reason
    assert refusal.peer_host == "127.0.0.1"
    assert scp.echoes == 0


def test_certificate_of_another_ae_is_refused_after_the_request(
        ctx: ssl.SSLContext, pki: TestPki) -> None:
    """A valid certificate, but its CN names OTHERNODE while the caller says MODALITY."""
    with tls_scp(ctx, {"MODALITY": MTLS, "OTHERNODE": MTLS}) as scp:
        res = echoscu(scp.port, tls_options(pki.leaf("OTHERNODE"), pki.ca))
        ok = echoscu(scp.port, tls_options(pki.leaf("OTHERNODE"), pki.ca), calling="OTHERNODE")
    assert res.returncode != 0
    assert "Calling AE Title Not Recognized" in res.stdout + res.stderr
    assert ok.returncode == 0, ok.stderr
    assert [(r.reason, r.calling_ae, r.called_ae) for r in scp.refusals] == [
        (TlsRefusal.ae_mismatch, "MODALITY", "DEIDGATE")]
    assert scp.echoes == 1  # only OTHERNODE's own


def test_fingerprint_pin(ctx: ssl.SSLContext, pki: TestPki) -> None:
    pinned = pki.leaf("MODALITY")
    twin = pki.leaf("MODALITY", sans=("modality.example",))  # same CA and CN, another key
    policy = NodeTls(mode=TlsMode.mtls, pin_sha256=pinned.sha256.upper())
    with tls_scp(ctx, {"MODALITY": policy}) as scp:
        refused = echoscu(scp.port, tls_options(twin, pki.ca))
        accepted = echoscu(scp.port, tls_options(pinned, pki.ca))
    assert refused.returncode != 0
    assert accepted.returncode == 0, accepted.stderr
    assert [r.reason for r in scp.refusals] == [TlsRefusal.pin_mismatch]


def test_certificate_pinned_to_another_node_is_refused_even_where_no_pin_is_set(
        ctx: ssl.SSLContext, pki: TestPki) -> None:
    other = pki.leaf("OTHERNODE")
    pins = {other.sha256: "OTHERNODE"}
    with tls_scp(ctx, {"MODALITY": NodeTls(mode=TlsMode.tls)}, pins=lambda: pins) as scp:
        res = echoscu(scp.port, tls_options(other, pki.ca))
    assert res.returncode != 0
    assert [r.reason for r in scp.refusals] == [TlsRefusal.ae_mismatch]


def test_client_certificate_required_only_for_mtls(ctx: ssl.SSLContext, pki: TestPki) -> None:
    anonymous = tls_options(None, pki.ca)  # dcmtk's +tla: TLS without a client certificate
    with tls_scp(ctx, {"MODALITY": MTLS, "VIEWER": NodeTls(mode=TlsMode.tls)}) as scp:
        refused = echoscu(scp.port, anonymous)
        accepted = echoscu(scp.port, anonymous, calling="VIEWER")
    assert refused.returncode != 0
    assert accepted.returncode == 0, accepted.stderr
    assert [r.reason for r in scp.refusals] == [TlsRefusal.client_certificate_required]


def test_plain_dicom_on_the_tls_port(ctx: ssl.SSLContext) -> None:
    with tls_scp(ctx, {"MODALITY": NodeTls()}) as scp:
        res = echoscu(scp.port, [])
        refusal = scp.wait_refusal()
    assert res.returncode != 0
    assert refusal.reason is TlsRefusal.plain_on_tls_port
    assert scp.echoes == 0


def test_plain_port_applies_each_nodes_policy() -> None:
    policies = {"MODALITY": NodeTls(mode=TlsMode.tls), "LEGACY": NodeTls(mode=TlsMode.off),
                "MIGRATING": NodeTls(mode=TlsMode.mtls, allow_plain=True)}
    with tls_scp(None, policies) as scp:
        refused = echoscu(scp.port, [])
        legacy = echoscu(scp.port, [], calling="LEGACY")
        migrating = echoscu(scp.port, [], calling="MIGRATING")
    assert refused.returncode != 0
    assert legacy.returncode == 0 and migrating.returncode == 0
    assert [(r.reason, r.calling_ae) for r in scp.refusals] == [
        (TlsRefusal.tls_required, "MODALITY")]


def _tls11_client(pki: TestPki) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        c.minimum_version = ssl.TLSVersion.TLSv1
        c.maximum_version = ssl.TLSVersion.TLSv1_1
    c.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS 1.1 above level 0
    c.load_verify_locations(pki.ca)
    c.load_cert_chain(pki.leaf("MODALITY").cert, pki.leaf("MODALITY").key)
    return c


def _handshake(client: ssl.SSLContext, port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            client.wrap_socket(raw, server_hostname="localhost") as tls:
        return str(tls.version())


def test_tls_1_1_is_refused(ctx: ssl.SSLContext, pki: TestPki) -> None:
    client = _tls11_client(pki)
    with tls_scp(ctx, {"MODALITY": MTLS}) as scp:
        with pytest.raises(ssl.SSLError):
            _handshake(client, scp.port)
        refusal = scp.wait_refusal()
    assert refusal.reason is TlsRefusal.protocol_version
    # the control: the same client does speak TLS 1.1 to a server that allows it
    lax = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        lax.minimum_version = ssl.TLSVersion.TLSv1
    lax.set_ciphers("DEFAULT:@SECLEVEL=0")
    server = pki.leaf("DEIDGATE")
    lax.load_cert_chain(server.cert, server.key)
    with tls_scp(lax, {}) as scp:
        assert _handshake(client, scp.port) == "TLSv1.1"


def test_a_silent_peer_blocks_nobody_and_times_out(ctx: ssl.SSLContext, pki: TestPki) -> None:
    with tls_scp(ctx, {"MODALITY": MTLS}, handshake_timeout=1.5) as scp, \
            socket.create_connection(("127.0.0.1", scp.port)):
        started = time.monotonic()
        res = echoscu(scp.port, tls_options(pki.leaf("MODALITY"), pki.ca))
        assert res.returncode == 0, res.stderr
        assert time.monotonic() - started < 1.5  # served while the silent one still waits
        refusal = scp.wait_refusal(timeout=15)
    assert refusal.reason is TlsRefusal.handshake_timeout


def test_orthanc_as_tls_client(ctx: ssl.SSLContext, pki: TestPki, tmp_path: Path) -> None:
    """Debian's Orthanc 1.10.1 is built with DICOM TLS: it echoes and stores to our TLS SCP,
    presenting its own certificate (CN=ORTHANC) as the client certificate."""
    exam = small_exam(tmp_path / "exam", views=1)
    orthanc = pki.leaf("ORTHANC")
    with tls_scp(ctx, {"ORTHANC": MTLS}) as scp:
        modalities = {"deidgate": {"AET": "DEIDGATE", "Host": "127.0.0.1", "Port": scp.port,
                                   "UseDicomTls": True}}
        with orthanc_server(tmp_path / "orthanc", extra={
            "DicomModalities": modalities, "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(orthanc.cert), "DicomTlsPrivateKey": str(orthanc.key),
            "DicomTlsTrustedCertificates": str(pki.ca),
            "DicomTlsRemoteCertificateRequired": True,
        }) as peer:
            ids = peer.upload(*exam.files)
            peer._req("POST", "/modalities/deidgate/echo", b"{}")
            body = json.dumps({"Resources": ids, "Synchronous": True}).encode()
            peer._req("POST", "/modalities/deidgate/store", body, timeout=60)
    assert scp.echoes == 1
    assert scp.stored == exam.sop_uids
    assert scp.refusals == []
