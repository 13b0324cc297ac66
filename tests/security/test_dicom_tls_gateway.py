"""DICOM TLS wired into the gateway itself: the listener's TLS port (one process and a group),
its per-AE policies from the database, the refusals it records, and the retrieval SCU (C-ECHO,
C-FIND, C-MOVE, C-GET, forwarding C-STORE) over TLS, against dcmtk's TLS tools and Orthanc."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless
from sqlalchemy import select

from service.core.config import Settings
from service.core.keys import SiteKeys
from service.db.migrate import upgrade
from service.db.models.dicom import AssociationAttempt, ReceivedInstance
from service.db.session import session_scope
from service.dicom import admin
from service.dicom import find as f
from service.dicom import pull as r
from service.dicom.listener import Listener, ListenerConfig
from service.dicom.listener_group import ListenerGroup
from service.dicom.scu import PacsError, Timeouts, echo
from service.dicom.spool import Spool
from service.dicom.store_handler import StoreSink
from service.dicom.tls import DicomTlsFiles
from service.dicom.uid_keys import uid_key
from service.jobs import pacs
from synthetic.exam import fresh_exam
from tests.peers.certs import TestPki
from tests.peers.dcmtk import storescp as dcmtk_storescp
from tests.peers.net import free_port
from tests.peers.orthanc import orthanc_server
from tests.security.dicom_harness import echoscu, small_exam, storescu, tls_options
from tests.security.test_dicom_tls_scu import storescp_tls

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
MTLS = "mtls-required"
FAST = r.RetryPolicy(attempts=1, timeouts=Timeouts(connect=10, dimse=30, network=30, slot=30))


@pytest.fixture(scope="module")
def files(pki: TestPki) -> DicomTlsFiles:
    ours = pki.leaf("DEIDGATE")
    return DicomTlsFiles(ours.cert, ours.key, pki.ca)


@pytest.fixture()
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'deidgate.db'}"
    upgrade(url)
    return url


def _config(files: DicomTlsFiles, **kw: Any) -> ListenerConfig:
    return ListenerConfig(**{"ae_title": "DEIDGATE", "host": "127.0.0.1", "port": 0,
                             "tls_port": 0, "tls": files, "allow_cache_s": 0.0,
                             "tls_handshake_timeout": 3.0, **kw})


@contextmanager
def gateway(db: str, keys: SiteKeys, tmp: Path, files: DicomTlsFiles,
            **kw: Any) -> Iterator[Listener]:
    listener = Listener(_config(files, **kw), db_url=db, keys=keys,
                        spool=Spool(tmp / "spool", free_floor_bytes=0)).start()
    try:
        yield listener
    finally:
        listener.stop()


def _attempts(db: str) -> list[tuple[str, str, str]]:
    with session_scope(db) as s:
        return [(a.calling_ae, a.peer_host, a.reason) for a in
                s.scalars(select(AssociationAttempt).order_by(AssociationAttempt.id))]


def test_listener_tls_port_policies_and_recorded_refusals(
        migrated_db: str, site_keys: SiteKeys, files: DicomTlsFiles, pki: TestPki,
        tmp_path: Path) -> None:
    """Mutual TLS store with the certificate pinned to the calling AE; each kind of bad
    certificate, plain DICOM where the node requires TLS and plain DICOM on the TLS port are
    refused with their code, recorded (PHI-free) before the peer is answered."""
    with session_scope(migrated_db) as s:
        admin.allow(s, "MODALITY", tls_mode=MTLS)
        admin.allow(s, "OTHERNODE", tls_mode=MTLS)
        admin.allow(s, "LEGACY")
        admin.allow(s, "MIGRATING", tls_mode=MTLS, tls_allow_plain=True)
    exam = small_exam(tmp_path / "exam", views=2)
    modality = tls_options(pki.leaf("MODALITY"), pki.ca)
    with gateway(migrated_db, site_keys, tmp_path, files) as gw:
        assert gw.tls_port and gw.tls_port != gw.port
        stored = storescu(gw.tls_port, modality, exam.files)
        assert stored.returncode == 0, stored.stderr
        assert echoscu(gw.tls_port, modality).returncode == 0
        assert _attempts(migrated_db) == []

        refused = [
            echoscu(gw.tls_port, tls_options(pki.leaf("MODALITY", valid_days=(-10, -1)),
                                             pki.ca)),
            echoscu(gw.tls_port, tls_options(pki.leaf("MODALITY", ca="other"), pki.ca)),
            echoscu(gw.tls_port, tls_options(pki.leaf("OTHERNODE"), pki.ca)),  # as MODALITY
            echoscu(gw.tls_port, tls_options(None, pki.ca)),  # TLS, no client certificate
            echoscu(gw.port, []),  # plain DICOM from a node that requires TLS
            echoscu(gw.tls_port, []),  # plain DICOM on the TLS port
            echoscu(gw.tls_port, tls_options(pki.leaf("MODALITY"), pki.ca), calling="STRANGER"),
        ]
        assert all(res.returncode != 0 for res in refused)
        assert "Calling AE Title Not Recognized" in refused[2].stdout + refused[2].stderr
        # the allowed ones still pass: plain where the policy allows it
        assert echoscu(gw.port, [], calling="LEGACY").returncode == 0
        assert echoscu(gw.port, [], calling="MIGRATING").returncode == 0
        assert echoscu(gw.tls_port, tls_options(pki.leaf("OTHERNODE"), pki.ca),
                       calling="OTHERNODE").returncode == 0
    assert _attempts(migrated_db) == [
        ("", "127.0.0.1", "tls-certificate-expired"),
        ("", "127.0.0.1", "tls-unknown-ca"),
        ("MODALITY", "127.0.0.1", "tls-certificate-ae-mismatch"),
        ("MODALITY", "127.0.0.1", "tls-client-certificate-required"),
        ("MODALITY", "127.0.0.1", "tls-required"),
        ("", "127.0.0.1", "tls-plain-connection"),
        ("STRANGER", "127.0.0.1", "calling-ae-not-allowed"),
    ]
    with session_scope(migrated_db) as s:
        rows = list(s.scalars(select(ReceivedInstance)))
    assert sorted(row.sop_key for row in rows) == sorted(
        uid_key(site_keys, u) for u in exam.sop_uids)
    assert {row.calling_ae for row in rows} == {"MODALITY"}


def test_fingerprint_pin_in_the_database_binds_a_certificate_to_one_ae(
        db: str, site_keys: SiteKeys, files: DicomTlsFiles, pki: TestPki,
        tmp_path: Path) -> None:
    pacs_cert, twin = pki.leaf("PACS1"), pki.leaf("PACS1", sans=("pacs1.example",))
    with session_scope(db) as s:
        admin.add_node(s, "pacs1", ae_title="PACS1", host="127.0.0.1", port=104,
                       tls_mode=MTLS, tls_pin_sha256=pacs_cert.sha256)
        admin.allow(s, "PACS1")  # its entry sets no TLS: the node's policy governs
        admin.allow(s, "VIEWER", tls_mode="tls")  # TLS, no client certificate needed
    with gateway(db, site_keys, tmp_path, files) as gw:
        assert echoscu(gw.tls_port, tls_options(pacs_cert, pki.ca), calling="PACS1"
                       ).returncode == 0
        # the same CA and CN, another key: not the pinned certificate
        assert echoscu(gw.tls_port, tls_options(twin, pki.ca), calling="PACS1").returncode != 0
        # PACS1's certificate presented under another (allowed) AE title
        assert echoscu(gw.tls_port, tls_options(pacs_cert, pki.ca), calling="VIEWER"
                       ).returncode != 0
        assert echoscu(gw.tls_port, tls_options(None, pki.ca), calling="VIEWER").returncode == 0
        assert echoscu(gw.port, [], calling="PACS1").returncode != 0  # plain is off for it
    assert [a[::2] for a in _attempts(db)] == [
        ("PACS1", "tls-certificate-pin-mismatch"), ("VIEWER", "tls-certificate-ae-mismatch"),
        ("PACS1", "tls-required")]


def test_tls_only_listener_group(db: str, site_keys: SiteKeys, files: DicomTlsFiles,
                                 pki: TestPki, tmp_path: Path) -> None:
    """Two processes on one TLS port (SO_REUSEPORT), plain DICOM switched off entirely."""
    with session_scope(db) as s:
        admin.allow(s, "MODALITY", tls_mode=MTLS)
    group = ListenerGroup(_config(files, plain=False), db_url=db, keys=site_keys,
                          spool=Spool(tmp_path / "spool", free_floor_bytes=0), processes=2)
    exam = small_exam(tmp_path / "exam", views=2)
    with group:
        assert group.alive() == 1 and group.tls_port
        opts = tls_options(pki.leaf("MODALITY"), pki.ca)
        results = [echoscu(group.tls_port, opts) for _ in range(4)]
        stored = storescu(group.tls_port, opts, exam.files)
    assert all(res.returncode == 0 for res in results), [res.stderr for res in results]
    assert stored.returncode == 0, stored.stderr
    with session_scope(db) as s:
        assert len(list(s.scalars(select(ReceivedInstance)))) == 2


def test_listener_refuses_to_start_half_configured(db: str, site_keys: SiteKeys,
                                                   files: DicomTlsFiles, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", free_floor_bytes=0)
    with pytest.raises(admin.InvalidSetting, match="no DICOM TLS port"):
        Listener(_config(files, plain=False, tls_port=None), db_url=db, keys=site_keys,
                 spool=spool)
    with pytest.raises(admin.InvalidSetting, match="needs DEIDGATE_DICOM_TLS_CERT"):
        Listener(_config(files, tls=None), db_url=db, keys=site_keys, spool=spool)
    loose = tmp_path / "loose.key"
    loose.write_bytes(files.key.read_bytes())
    loose.chmod(0o644)
    bad = Listener(_config(DicomTlsFiles(files.cert, loose, files.ca)), db_url=db,
                   keys=site_keys, spool=spool)
    with pytest.raises(Exception, match="readable by others"):
        bad.start()
    assert bad.tls_port == 0 and bad._servers == {}


# --- the SCU side ---------------------------------------------------------------------------

def _node(port: int, ae: str = "STORESCP", **tls: Any) -> admin.NodeConfig:
    return admin.NodeConfig("research", ae, "127.0.0.1", port, **tls)


def test_scu_echo_over_tls_and_its_refusals(files: DicomTlsFiles, pki: TestPki,
                                            tmp_path: Path) -> None:
    with storescp_tls(tmp_path / "good", pki.leaf("STORESCP"), pki.ca) as peer:
        ok = echo(_node(peer.port, tls_mode=MTLS), "DEIDGATE", tls_files=files)
        assert ok.ok, ok
        seen = peer.requests_from_us()
        assert seen > 0
        # the node needs TLS but the gateway has none configured: never a plain attempt
        res = echo(_node(peer.port, tls_mode=MTLS), "DEIDGATE", tls_files=None)
        assert (res.ok, res.failure) == (False, "tls-not-configured")
        # pinned to another certificate
        res = echo(_node(peer.port, tls_mode=MTLS, tls_pin_sha256="ab" * 32), "DEIDGATE",
                   tls_files=files)
        assert (res.ok, res.failure) == (False, "tls-certificate-pin-mismatch")
        assert "DICOM TLS refused" in res.detail
        # the node's own name pin: its certificate names STORESCP, not PACS2
        res = echo(_node(peer.port, tls_mode=MTLS, tls_pin_name="PACS2"), "DEIDGATE",
                   tls_files=files)
        assert res.failure == "tls-certificate-ae-mismatch"
        assert peer.requests_from_us() == seen  # no refused one sent an A-ASSOCIATE-RQ
    with storescp_tls(tmp_path / "expired", pki.leaf("STORESCP", valid_days=(-10, -1)),
                      pki.ca) as peer:
        res = echo(_node(peer.port, tls_mode=MTLS), "DEIDGATE", tls_files=files)
        assert (res.ok, res.failure) == (False, "tls-certificate-expired")
        assert peer.requests_from_us() == 0


def test_forward_over_tls(db: str, files: DicomTlsFiles, pki: TestPki, tmp_path: Path) -> None:
    exam = small_exam(tmp_path / "exam", views=2)
    settings = Settings(home=tmp_path / "home", database_url=db, dicom_tls_cert=files.cert,
                        dicom_tls_key=files.key, dicom_tls_ca=files.ca)
    with storescp_tls(tmp_path / "scp", pki.leaf("STORESCP"), pki.ca) as peer:
        with session_scope(db) as s:
            admin.add_node(s, "research", ae_title="STORESCP", host="127.0.0.1",
                           port=peer.port, tls_mode=MTLS)
            admin.add_node(s, "wrong", ae_title="STORESCP", host="127.0.0.1", port=peer.port,
                           tls_mode=MTLS, tls_pin_name="RESEARCH2")
        assert pacs.forward(settings, "research", exam.files) == 2
        with pytest.raises(PacsError, match="tls-certificate-ae-mismatch") as err:
            pacs.forward(settings, "wrong", exam.files)
        assert err.value.code == "tls-certificate-ae-mismatch" and err.value.permanent
    got = sorted(str(dcmread(p).SOPInstanceUID) for p in peer.folder.iterdir())
    assert got == sorted(exam.sop_uids)


def test_find_move_and_get_over_tls_with_orthanc(
        db: str, site_keys: SiteKeys, files: DicomTlsFiles, pki: TestPki,
        tmp_path: Path) -> None:
    """Orthanc as a TLS PACS: C-FIND and C-MOVE over mutual TLS, Orthanc delivering the study
    to the listener's TLS port with its own certificate (pinned to its AE title through its
    PACS node); then C-GET over TLS; a plain association to the node is never tried."""
    exam = small_exam(tmp_path / "exam", views=2)
    orthanc = pki.leaf("ORTHANC")
    with session_scope(db) as s:
        admin.allow(s, "ORTHANC")
    with gateway(db, site_keys, tmp_path, files, plain=False) as gw, orthanc_server(
            tmp_path / "orthanc", extra={
                "DicomModalities": {"deidgate": {"AET": "DEIDGATE", "Host": "127.0.0.1",
                                                 "Port": gw.tls_port, "UseDicomTls": True}},
                "DicomTlsEnabled": True, "DicomTlsCertificate": str(orthanc.cert),
                "DicomTlsPrivateKey": str(orthanc.key),
                "DicomTlsTrustedCertificates": str(pki.ca),
                "DicomTlsRemoteCertificateRequired": True}) as peer:
        peer.upload(*exam.files)
        with session_scope(db) as s:
            node = admin.add_node(s, "orthanc", ae_title="ORTHANC", host="127.0.0.1",
                                  port=peer.dicom_port, tls_mode=MTLS)
        [study] = f.find_studies(node, {"study_instance_uids": [exam.study_uid]},
                                 local_ae="DEIDGATE", keys=site_keys, tls_files=files)
        assert study.expected == 2
        ctx = r.PullContext("DEIDGATE", site_keys,
                            functools.partial(r.received_keys, db), tls_files=files)
        rep = r.retrieve_study(node, study, ctx, retry=FAST)
        assert rep.complete, (rep.reason, rep.detail)
        assert rep.received == 2
        # a series filter (what a policy listing SOP classes gives) finds the series over TLS too
        mg_only = f.SeriesFilter(modalities=frozenset({"MG"}), source="test")
        rep = r.retrieve_study(node, study, ctx, retry=FAST, series_filter=mg_only)
        assert rep.complete, (rep.reason, rep.detail)
        assert rep.received == 2 and not rep.skipped

        getter = admin.NodeConfig("orthanc-get", "ORTHANC", "127.0.0.1", peer.dicom_port,
                                  "get", tls_mode=MTLS)
        get_url = f"sqlite:///{tmp_path / 'get.db'}"  # C-GET's own arrivals
        upgrade(get_url)
        sink = StoreSink(db_url=get_url, keys=site_keys,
                         spool=Spool(tmp_path / "get-spool", free_floor_bytes=0))
        get_ctx = r.PullContext("DEIDGATE", site_keys,
                                functools.partial(r.received_keys, get_url), sink, tls_files=files)
        rep = r.retrieve_study(getter, f.StudyMatch.known(exam.study_uid, site_keys, 2),
                               get_ctx, retry=FAST)
        assert rep.complete, (rep.reason, rep.detail)
        # without our TLS files the TLS node is refused before any connection
        with pytest.raises(PacsError) as err:
            f.find_studies(node, {"study_instance_uids": [exam.study_uid]},
                           local_ae="DEIDGATE", keys=site_keys)
        assert err.value.code == "tls-not-configured" and err.value.permanent
    assert _attempts(db) == []


def test_forward_sends_each_file_in_its_own_transfer_syntax(db: str, tmp_path: Path) -> None:
    """A de-identified copy keeps its transfer syntax: forwarding proposes it (plain DICOM
    here, dcmtk's storescp accepting every syntax it knows)."""
    j2k = fresh_exam(tmp_path / "j2k", index=7, views=1, transfer_syntax=JPEG2000Lossless)
    plain = fresh_exam(tmp_path / "plain", index=8, views=1)
    settings = Settings(home=tmp_path / "home", database_url=db)
    with dcmtk_storescp(tmp_path / "scp", ae_title="RESEARCH") as port:
        with session_scope(db) as s:
            admin.add_node(s, "research", ae_title="RESEARCH", host="127.0.0.1", port=port)
        assert pacs.forward(settings, "research", [*j2k.files, *plain.files]) == 2
    got = {str(dcmread(p).file_meta.TransferSyntaxUID) for p in (tmp_path / "scp").iterdir()}
    assert got == {JPEG2000Lossless, ExplicitVRLittleEndian}


def test_listener_from_settings(db: str, site_keys: SiteKeys, files: DicomTlsFiles,
                                pki: TestPki, tmp_path: Path) -> None:
    """The settings a deployment sets (DEIDGATE_DICOM_TLS_*) give the TLS port; a TLS port
    without a certificate is refused at start, not served as plain."""
    tls_port = free_port()
    settings = Settings(home=tmp_path / "home", database_url=db, dicom_host="127.0.0.1",
                        dicom_port=free_port(), dicom_tls_port=tls_port,
                        dicom_tls_cert=files.cert, dicom_tls_key=files.key,
                        dicom_tls_ca=files.ca, dicom_plain=False)
    with session_scope(db) as s:
        admin.allow(s, "MODALITY", tls_mode=MTLS)
    listener = Listener.from_settings(settings, db_url=db, keys=site_keys).start()
    try:
        assert listener.tls_port == tls_port and listener.config.plain is False
        assert echoscu(tls_port, tls_options(pki.leaf("MODALITY"), pki.ca)).returncode == 0
        assert echoscu(settings.dicom_port, []).returncode != 0  # nothing listens there
    finally:
        listener.stop()
    half = Settings(home=tmp_path / "home", database_url=db, dicom_tls_port=tls_port)
    with pytest.raises(admin.InvalidSetting, match="needs DEIDGATE_DICOM_TLS_CERT"):
        Listener.from_settings(half, db_url=db, keys=site_keys)
