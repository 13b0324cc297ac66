"""DICOM edge administration over REST: the same operations as ``deidgate ae`` / ``pacs``."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.core.security import Role
from tests.api.conftest import bearer
from tests.peers.dcmtk import storescp
from tests.peers.net import free_port

NODE = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}
PLAIN = {"tls_mode": "off", "tls_pin_sha256": None, "tls_pin_name": None,
         "tls_allow_plain": False}


@pytest.fixture()
def h(tokens: dict[Role, str]) -> dict[str, str]:
    return bearer(tokens[Role.admin])


def test_local_ae_seeded_from_settings_then_changed(client: TestClient, h: dict[str, str]) -> None:
    r = client.get("/api/v1/admin/ae", headers=h)
    assert r.status_code == 200
    assert r.json()["ae_title"] == "DEIDGATE" and r.json()["port"] == 11112
    r = client.patch("/api/v1/admin/ae", json={"ae_title": "GATE1", "port": 11113}, headers=h)
    assert r.status_code == 200, r.text
    assert client.get("/api/v1/admin/ae", headers=h).json() == {
        **r.json(), "ae_title": "GATE1", "port": 11113
    }
    r = client.patch("/api/v1/admin/ae", json={"port": 70000}, headers=h)
    assert r.status_code == 422  # the range is in the OpenAPI document, so FastAPI refuses
    assert r.json()["error"] == {
        "code": "invalid-request", "message": "body port: Input should be less than or equal to "
        "65535"
    }
    assert client.get("/api/v1/admin/ae", headers=h).json()["port"] == 11113


def test_nodes_crud(client: TestClient, h: dict[str, str]) -> None:
    assert client.get("/api/v1/admin/nodes", headers=h).json() == []
    r = client.post("/api/v1/admin/nodes", json={"name": "pacs1", **NODE}, headers=h)
    assert r.status_code == 201, r.text
    assert r.json() == {"name": "pacs1", **NODE, "retrieve": "move", "max_associations": 2,
                        **PLAIN}

    dup = client.post("/api/v1/admin/nodes", json={"name": "pacs1", **NODE}, headers=h)
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "pacs-node-exists"

    r = client.put(
        "/api/v1/admin/nodes/pacs1", json={**NODE, "port": 4343, "retrieve": "get"}, headers=h
    )
    assert r.status_code == 200 and r.json()["port"] == 4343 and r.json()["retrieve"] == "get"
    bad = client.put("/api/v1/admin/nodes/pacs1", json={**NODE, "ae_title": "A\\B"}, headers=h)
    assert bad.status_code == 422 and "AE title" in bad.json()["error"]["message"]
    assert client.get("/api/v1/admin/nodes/pacs1", headers=h).json()["port"] == 4343

    assert [n["name"] for n in client.get("/api/v1/admin/nodes", headers=h).json()] == ["pacs1"]
    assert client.delete("/api/v1/admin/nodes/pacs1", headers=h).status_code == 204
    gone = client.get("/api/v1/admin/nodes/pacs1", headers=h)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "pacs-node-unknown"
    assert client.delete("/api/v1/admin/nodes/pacs1", headers=h).status_code == 404
    assert client.put("/api/v1/admin/nodes/pacs1", json=NODE, headers=h).status_code == 404


def test_node_validation(client: TestClient, h: dict[str, str]) -> None:
    r = client.post(
        "/api/v1/admin/nodes", json={"name": "p", **NODE, "retrieve": "teleport"}, headers=h
    )
    assert r.status_code == 422 and "retrieve" in r.json()["error"]["message"]
    r = client.post("/api/v1/admin/nodes", json={"name": "bad name", **NODE}, headers=h)
    assert r.status_code == 422 and "node name" in r.json()["error"]["message"]


def test_allowlist(client: TestClient, h: dict[str, str]) -> None:
    assert client.post(
        "/api/v1/admin/allowlist", json={"ae_title": "MODALITY1"}, headers=h
    ).status_code == 201
    r = client.post(
        "/api/v1/admin/allowlist", json={"ae_title": "PACS", "host": "10.0.0.7"}, headers=h
    )
    assert r.status_code == 201 and r.json() == {"ae_title": "PACS", "host": "10.0.0.7", **PLAIN}
    bad = client.post(
        "/api/v1/admin/allowlist", json={"ae_title": "PACS", "host": "pacs.local"}, headers=h
    )
    assert bad.status_code == 422 and "IP address" in bad.json()["error"]["message"]
    listed = client.get("/api/v1/admin/allowlist", headers=h).json()
    assert {"ae_title": "MODALITY1", "host": None, **PLAIN} in listed and len(listed) == 2
    assert client.delete("/api/v1/admin/allowlist/PACS", headers=h).json() == {"removed": 1}
    r = client.delete("/api/v1/admin/allowlist/PACS", headers=h)
    assert r.status_code == 404 and r.json()["error"]["code"] == "allowlist-unknown"


def test_node_and_caller_tls_policy(client: TestClient, h: dict[str, str]) -> None:
    pin = "AB:" * 31 + "CD"
    r = client.post("/api/v1/admin/nodes", json={
        "name": "pacs1", **NODE, "tls_mode": "mtls-required", "tls_pin_sha256": pin},
        headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["tls_mode"] == "mtls-required"
    assert r.json()["tls_pin_sha256"] == "ab" * 31 + "cd"  # stored as lower-case hex
    # the same certificate cannot be pinned to another AE title: it would lock one out
    r = client.post("/api/v1/admin/allowlist", json={
        "ae_title": "MODALITY", "tls_mode": "tls", "tls_pin_sha256": "ab" * 31 + "cd"},
        headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "tls-pin-conflict"
    assert "already pinned" in r.json()["error"]["message"]
    # ... but to the node's own AE title calling in, it can
    r = client.post("/api/v1/admin/allowlist", json={
        "ae_title": "ORTHANC", "tls_mode": "mtls-required", "tls_pin_sha256": pin}, headers=h)
    assert r.status_code == 201, r.text
    # re-posting without TLS fields keeps the policy; with them replaces it
    r = client.post("/api/v1/admin/allowlist", json={"ae_title": "ORTHANC"}, headers=h)
    assert r.json()["tls_mode"] == "mtls-required"
    r = client.post("/api/v1/admin/allowlist", json={
        "ae_title": "ORTHANC", "tls_mode": "tls", "tls_allow_plain": True}, headers=h)
    assert r.json() == {"ae_title": "ORTHANC", "host": None, "tls_mode": "tls",
                        "tls_pin_sha256": None, "tls_pin_name": None, "tls_allow_plain": True}
    for bad in ({"tls_mode": "ssl3"}, {"tls_pin_sha256": "12" * 31},
                {"tls_pin_name": " padded"}, {"tls_allow_plain": 0}):
        r = client.post("/api/v1/admin/nodes", json={"name": "p2", **NODE, **bad}, headers=h)
        assert r.status_code == 422, bad
        assert r.json()["error"]["code"] == "invalid-request"


def test_echo_a_real_peer_and_an_absent_one(
    client: TestClient, h: dict[str, str], tmp_path: Path
) -> None:
    with storescp(tmp_path / "scp", ae_title="STORESCP") as port:
        node = {"name": "scp", "ae_title": "STORESCP", "host": "127.0.0.1", "port": port}
        assert client.post("/api/v1/admin/nodes", json=node, headers=h).status_code == 201
        r = client.post("/api/v1/admin/nodes/scp/echo", headers=h)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["ok"] is True and body["failure"] is None and body["rtt_ms"] > 0

    dead = {"name": "dead", "ae_title": "NOBODY", "host": "127.0.0.1", "port": free_port()}
    assert client.post("/api/v1/admin/nodes", json=dead, headers=h).status_code == 201
    r = client.post("/api/v1/admin/nodes/dead/echo?timeout=3", headers=h)
    assert r.status_code == 200
    assert r.json()["ok"] is False and r.json()["failure"] == "refused"
    assert "refused the connection" in r.json()["detail"]

    r = client.post("/api/v1/admin/nodes/nosuch/echo", headers=h)
    assert r.status_code == 404 and r.json()["error"]["code"] == "pacs-node-unknown"


def test_changes_are_in_the_audit_chain_with_the_admin_as_actor(
    client: TestClient, h: dict[str, str], tokens: dict[Role, str]
) -> None:
    client.patch("/api/v1/admin/ae", json={"port": 11119}, headers=h)
    client.post("/api/v1/admin/nodes", json={"name": "pacs1", **NODE}, headers=h)
    client.put("/api/v1/admin/nodes/pacs1", json={**NODE, "port": 1}, headers=h)
    client.delete("/api/v1/admin/nodes/pacs1", headers=h)
    client.post("/api/v1/admin/allowlist", json={"ae_title": "MOD1"}, headers=h)
    client.delete("/api/v1/admin/allowlist/MOD1", headers=h)
    client.post("/api/v1/admin/nodes", json={"name": "pacs1", **NODE, "port": 0}, headers=h)
    auditor = bearer(tokens[Role.auditor])
    events = client.get("/api/v1/audit/events", headers=auditor).json()
    assert [(e["kind"], e["actor"]) for e in events] == [
        (kind, "token:test-admin")
        for kind in (
            "dicom.local-ae-changed",
            "dicom.node-added",
            "dicom.node-replaced",
            "dicom.node-removed",
            "dicom.caller-allowed",
            "dicom.caller-disallowed",
        )
    ]  # the refused last request left no event
    assert events[2]["details"]["port"] == 1
    assert client.get("/api/v1/audit/chain", headers=auditor).json()["ok"] is True
