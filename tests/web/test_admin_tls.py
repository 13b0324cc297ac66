"""The admin page shows each node's DICOM TLS policy and the TLS refusals the listener
recorded (a real refusal: dcmtk's echoscu +tls with an expired certificate)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.core.config import Settings
from service.core.keys import SiteKeys
from service.core.security import Role
from service.db.session import session_scope
from service.dicom import admin as dicom_admin
from service.dicom.listener import Listener, ListenerConfig
from service.dicom.spool import Spool
from service.dicom.tls import DicomTlsFiles
from tests.peers.certs import TestPki
from tests.security.dicom_harness import echoscu, tls_options

pytestmark = pytest.mark.integration
SignedIn = Callable[[Role], tuple[TestClient, str]]


def test_admin_page_shows_tls_policies_and_refusals(signed_in: SignedIn, settings: Settings,
                                                    site_keys: SiteKeys, tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    ours = pki.leaf("DEIDGATE")
    with session_scope(settings.db_url) as s:
        dicom_admin.allow(s, "MODALITY", tls_mode="mtls-required")
        dicom_admin.add_node(s, "pacs1", ae_title="PACS1", host="127.0.0.1", port=2762,
                             tls_mode="tls", tls_pin_name="pacs1.example")
    listener = Listener(ListenerConfig(
        ae_title="DEIDGATE", host="127.0.0.1", port=0, tls_port=0, allow_cache_s=0.0,
        tls=DicomTlsFiles(ours.cert, ours.key, pki.ca)), db_url=settings.db_url,
        keys=site_keys, spool=Spool(tmp_path / "spool", free_floor_bytes=0)).start()
    try:
        expired = pki.leaf("MODALITY", valid_days=(-10, -1))
        assert listener.tls_port is not None
        assert echoscu(listener.tls_port, tls_options(expired, pki.ca)).returncode != 0
        assert echoscu(listener.port, []).returncode != 0  # plain, but MODALITY needs TLS
    finally:
        listener.stop()
    c, _ = signed_in(Role.admin)
    page = c.get("/admin").text
    assert "tls-certificate-expired" in page and "(TLS handshake)" in page
    assert "tls-required" in page
    assert "mtls-required" in page  # the allow-list entry
    assert "tls name pacs1.example" in page  # the node
