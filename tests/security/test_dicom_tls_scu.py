"""The SCU side of DICOM TLS against real TLS servers: dcmtk's storescp +tls and Orthanc."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from service.dicom.tls import DicomTlsFiles, NodeTls, TlsMode, TlsRefusal, TlsRefused
from service.dicom.tls_scu import ScuTls, scu_tls
from tests.peers.certs import Leaf, TestPki
from tests.peers.net import free_port, stop_process, wait_port
from tests.peers.orthanc import orthanc_server
from tests.security.dicom_harness import MG_PRESENTATION, small_exam, tls_options

pytestmark = pytest.mark.integration


@dataclass
class Storescp:
    port: int
    folder: Path
    log: Path

    def requests_from_us(self) -> int:
        """A-ASSOCIATE-RQs that named us. dcmtk logs "Association Received" (with an empty
        request) even when TLS 1.3 let the handshake finish before our pin check closed it."""
        return len(re.findall(r"Calling Application Name:\s+DEIDGATE",
                              self.log.read_text(errors="replace")))


@contextmanager
def storescp_tls(tmp: Path, leaf: Leaf, ca: Path) -> Iterator[Storescp]:
    """dcmtk's storescp with TLS, requiring and verifying the client's certificate."""
    folder, log = tmp / "received", tmp / "storescp.log"
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(["storescp", "-d", "-aet", "STORESCP", "-od", str(folder),
                                 *tls_options(leaf, ca), str(port)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_port(port)
            yield Storescp(port, folder, log)
        finally:
            stop_process(proc)


@pytest.fixture(scope="module")
def files(pki: TestPki) -> DicomTlsFiles:
    ours = pki.leaf("DEIDGATE")
    return DicomTlsFiles(ours.cert, ours.key, pki.ca)


def _associate(tls: ScuTls | None, port: int, ae_title: str):  # type: ignore[no-untyped-def]
    ae = AE(ae_title="DEIDGATE")
    ae.add_requested_context(Verification)
    ae.add_requested_context(MG_PRESENTATION)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 15
    return ae.associate("127.0.0.1", port, ae_title=ae_title,
                        tls_args=tls.tls_args if tls else None)


def _scu(files: DicomTlsFiles, policy: NodeTls, ae_title: str = "STORESCP") -> ScuTls:
    tls = scu_tls(files, policy, node="research", ae_title=ae_title, host="localhost")
    assert tls is not None
    return tls


def test_mutual_tls_echo_and_store_to_storescp(files: DicomTlsFiles, pki: TestPki,
                                               tmp_path: Path) -> None:
    exam = small_exam(tmp_path / "exam", views=1)
    with storescp_tls(tmp_path, pki.leaf("STORESCP"), pki.ca) as peer:
        tls = _scu(files, NodeTls(mode=TlsMode.mtls))  # name pin: the AE title STORESCP
        assoc = _associate(tls, peer.port, "STORESCP")
        assert assoc.is_established
        try:
            assert assoc.send_c_echo().Status == 0x0000
            assert assoc.send_c_store(dcmread(exam.files[0])).Status == 0x0000
        finally:
            assoc.release()
    assert tls.refusal is None
    assert peer.requests_from_us() > 0  # the check below can see a request
    [received] = list(peer.folder.iterdir())
    assert dcmread(received).SOPInstanceUID == exam.sop_uids[0]


@pytest.mark.parametrize(("leaf", "policy", "reason"), [
    ({"cn": "STORESCP", "valid_days": (-10, -1)}, {}, TlsRefusal.expired),
    ({"cn": "STORESCP", "ca": "other"}, {}, TlsRefusal.unknown_ca),
    ({"cn": "STORESCP", "sans": ("pacs.elsewhere.example",)}, {}, TlsRefusal.hostname_mismatch),
    ({"cn": "OTHERPACS"}, {}, TlsRefusal.ae_mismatch),
    ({"cn": "STORESCP"}, {"pin_sha256": "ab" * 32}, TlsRefusal.pin_mismatch),
])
def test_bad_server_certificate_refused_before_any_request(
        files: DicomTlsFiles, pki: TestPki, tmp_path: Path, leaf: dict, policy: dict,
        reason: TlsRefusal) -> None:
    with storescp_tls(tmp_path, pki.leaf(**leaf), pki.ca) as peer:
        tls = _scu(files, NodeTls(mode=TlsMode.mtls, **policy))
        assoc = _associate(tls, peer.port, "STORESCP")
        assert not assoc.is_established
        assert tls.refusal is reason
        with pytest.raises(TlsRefused) as err:
            tls.raise_if_refused()
        assert err.value.code == reason.value
        assert peer.requests_from_us() == 0  # no A-ASSOCIATE-RQ ever reached the node


def test_pinned_fingerprint_accepted(files: DicomTlsFiles, pki: TestPki, tmp_path: Path) -> None:
    leaf = pki.leaf("STORESCP")
    with storescp_tls(tmp_path, leaf, pki.ca) as peer:
        tls = _scu(files, NodeTls(mode=TlsMode.mtls, pin_sha256=leaf.sha256))
        assoc = _associate(tls, peer.port, "STORESCP")
        assert assoc.is_established
        assoc.release()


def test_server_demanding_a_client_certificate(files: DicomTlsFiles, pki: TestPki,
                                               tmp_path: Path) -> None:
    """Mode ``tls`` presents no certificate; storescp demands one and says so."""
    with storescp_tls(tmp_path, pki.leaf("STORESCP"), pki.ca) as peer:
        tls = _scu(files, NodeTls(mode=TlsMode.tls))
        assoc = _associate(tls, peer.port, "STORESCP")
        assert not assoc.is_established
        assert tls.refusal is TlsRefusal.client_certificate_required


def test_off_means_plain(files: DicomTlsFiles) -> None:
    assert scu_tls(files, NodeTls(), node="n", ae_title="A", host="localhost") is None


def test_orthanc_tls_echo_and_find(files: DicomTlsFiles, pki: TestPki, tmp_path: Path) -> None:
    """Debian's Orthanc 1.10.1 supports DICOM TLS (DicomTlsEnabled, ...): mutual TLS, C-ECHO,
    C-FIND; its TLS port refuses plain DICOM."""
    exam = small_exam(tmp_path / "exam", views=2)
    orthanc = pki.leaf("ORTHANC")
    with orthanc_server(tmp_path / "orthanc", modalities={
        "deidgate": ("DEIDGATE", "127.0.0.1", 9)}, extra={
            "DicomTlsEnabled": True, "DicomTlsCertificate": str(orthanc.cert),
            "DicomTlsPrivateKey": str(orthanc.key), "DicomTlsTrustedCertificates": str(pki.ca),
            "DicomTlsRemoteCertificateRequired": True, "DicomAlwaysAllowFind": True}) as peer:
        peer.upload(*exam.files)
        tls = _scu(files, NodeTls(mode=TlsMode.mtls), ae_title="ORTHANC")
        assoc = _associate(tls, peer.dicom_port, "ORTHANC")
        assert assoc.is_established, tls.refusal
        try:
            assert assoc.send_c_echo().Status == 0x0000
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = ""
            query.NumberOfStudyRelatedInstances = ""
            found = [ds for status, ds in
                     assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
                     if status.Status in (0xFF00, 0xFF01)]
        finally:
            assoc.release()
        assert [str(ds.StudyInstanceUID) for ds in found] == [exam.study_uid]
        assert int(found[0].NumberOfStudyRelatedInstances) == 2
        plain = _associate(None, peer.dicom_port, "ORTHANC")
        assert not plain.is_established
        other = _scu(files, NodeTls(mode=TlsMode.mtls, pin_name="PACS2"), ae_title="ORTHANC")
        assert not _associate(other, peer.dicom_port, "ORTHANC").is_established
        assert other.refusal is TlsRefusal.ae_mismatch
