"""Audit over REST: mapping queries by pseudonym, re-identification with a recorded reason and
the caller's token name as actor, the event log, and chain verification (which sees tampering)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydicom import Dataset

from service.audit.store import AuditStore
from service.audit.types import Mapping
from service.core.config import Settings
from service.core.keys import SiteKeys
from service.core.security import Role
from service.db.session import session_scope
from tests.api.conftest import bearer
from tests.audit.util import tamper
from workers.deid.outcome import DeidOutcome

PATIENT_ID, PATIENT_PSN = "01017012345", "PQ2ZLT7B6YV5KDXAM3RC"
STUDY_UID, STUDY_PSN = "1.2.826.0.1.3680043.99.1", "2.25.1111111111"
INSTANCE_UID, INSTANCE_PSN = "1.2.826.0.1.3680043.99.1.1.1", "2.25.2222222222"
REASON = "Incidental finding follow-up, ticket SEC-4711"


@pytest.fixture()
def recorded(settings: Settings, migrated_db: str) -> None:
    """One de-identified instance recorded exactly as the pipeline records it."""
    keys = SiteKeys.load(settings.site_key_path)  # the same key file the app will load
    outcome = DeidOutcome(
        dataset=Dataset(),
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
        sop_instance_uid=INSTANCE_PSN,
        study_instance_uid=STUDY_PSN,
        series_instance_uid="2.25.3333333333",
        patient_pseudonym=PATIENT_PSN,
        mappings=[
            Mapping("patient", PATIENT_ID, PATIENT_PSN),
            Mapping("study", STUDY_UID, STUDY_PSN),
            Mapping("instance", INSTANCE_UID, INSTANCE_PSN),
        ],
        policy_name="mammography-screening",
        policy_version="1",
    )
    with session_scope(migrated_db) as s:
        AuditStore(s, keys).record_outcome(outcome, source="scu:ORTHANC", job_id="j" * 32)


@pytest.fixture()
def auditor(tokens: dict[Role, str]) -> dict[str, str]:
    return bearer(tokens[Role.auditor])


@pytest.mark.usefixtures("recorded")
def test_mapping_queries_show_provenance_not_originals(
    client: TestClient, auditor: dict[str, str]
) -> None:
    r = client.get(f"/api/v1/audit/mappings/{STUDY_PSN}", headers=auditor)
    assert r.status_code == 200
    [entry] = r.json()
    assert entry["kind"] == "study" and entry["patient_pseudonym"] == PATIENT_PSN
    assert entry["source"] == "scu:ORTHANC" and entry["job_id"] == "j" * 32
    assert entry["created_at"].endswith("Z") or "+00:00" in entry["created_at"]
    r2 = client.get(f"/api/v1/audit/patients/{PATIENT_PSN}/mappings", headers=auditor)
    assert {e["kind"] for e in r2.json()} == {"patient", "study", "instance"}
    for resp in (r, r2):
        for original in (PATIENT_ID, STUDY_UID, INSTANCE_UID):
            assert original not in resp.text
    assert client.get("/api/v1/audit/mappings/2.25.404", headers=auditor).json() == []


@pytest.mark.usefixtures("recorded")
def test_lookup_returns_originals_and_is_recorded_with_actor_and_reason(
    client: TestClient, auditor: dict[str, str]
) -> None:
    r = client.post(
        "/api/v1/audit/lookup", json={"pseudonym": PATIENT_PSN, "reason": REASON}, headers=auditor
    )
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    assert r.json() == {
        "pseudonym": PATIENT_PSN,
        "actor": "token:test-auditor",
        "matches": [{"kind": "patient", "original": PATIENT_ID}],
    }
    [event] = client.get("/api/v1/audit/reidentifications", headers=auditor).json()
    assert event["actor"] == "token:test-auditor"
    assert event["details"]["reason"] == REASON
    assert event["details"]["pseudonym"] == PATIENT_PSN
    assert PATIENT_ID not in str(event)


@pytest.mark.usefixtures("recorded")
def test_lookup_of_unknown_pseudonym_is_recorded_then_404(
    client: TestClient, auditor: dict[str, str]
) -> None:
    r = client.post(
        "/api/v1/audit/lookup", json={"pseudonym": "PNOSUCH", "reason": REASON}, headers=auditor
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "pseudonym-unknown"
    events = client.get("/api/v1/audit/reidentifications", headers=auditor).json()
    assert [(e["details"]["pseudonym"], e["details"]["matches"]) for e in events] == [
        ("PNOSUCH", 0)
    ]


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({"pseudonym": PATIENT_PSN}, "body reason: Field required"),
        ({"pseudonym": PATIENT_PSN, "reason": "          "}, "reason"),
        ({"pseudonym": PATIENT_PSN, "reason": "because!!!!!!"}, "at least two words"),
        ({"pseudonym": "HANSEN^KARI", "reason": REASON}, "body pseudonym"),
    ],
)
@pytest.mark.usefixtures("recorded")
def test_lookup_without_a_proper_reason_is_refused_and_not_performed(
    client: TestClient, auditor: dict[str, str], body: dict[str, str], fragment: str
) -> None:
    r = client.post("/api/v1/audit/lookup", json=body, headers=auditor)
    assert r.status_code == 422
    assert fragment in r.json()["error"]["message"]
    assert "HANSEN" not in r.text and PATIENT_ID not in r.text
    assert client.get("/api/v1/audit/reidentifications", headers=auditor).json() == []


@pytest.mark.usefixtures("recorded")
def test_event_log(client: TestClient, auditor: dict[str, str]) -> None:
    events = client.get("/api/v1/audit/events", headers=auditor).json()
    assert [e["kind"] for e in events] == ["deidentified"]
    assert events[0]["details"]["patient"] == PATIENT_PSN
    assert client.get("/api/v1/audit/events?kind=reidentify", headers=auditor).json() == []
    assert client.get("/api/v1/audit/events?limit=0", headers=auditor).status_code == 422


@pytest.mark.usefixtures("recorded")
def test_chain_verification_sees_tampering(
    client: TestClient, tokens: dict[Role, str], migrated_db: str
) -> None:
    client.post(
        "/api/v1/audit/lookup",
        json={"pseudonym": PATIENT_PSN, "reason": REASON},
        headers=bearer(tokens[Role.auditor]),
    )
    for role in (Role.auditor, Role.admin):
        r = client.get("/api/v1/audit/chain", headers=bearer(tokens[role]))
        assert r.status_code == 200
        assert r.json() == {
            "ok": True, "events": 2, "head_seq": 2, "first_bad_seq": None, "findings": []
        }
    # Someone with database access rewrites who did the re-identification.
    tamper(migrated_db, "UPDATE audit_events SET actor = 'token:nobody' WHERE seq = 2")
    r = client.get("/api/v1/audit/chain", headers=bearer(tokens[Role.auditor]))
    body = r.json()
    assert r.status_code == 200 and body["ok"] is False and body["first_bad_seq"] == 2
    assert {(f["seq"], f["problem"]) for f in body["findings"]} == {(2, "edited")}
    assert "nobody" not in r.text
