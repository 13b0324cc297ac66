"""Jobs over REST: submit, read, cancel, retry, with the caller's token name as actor and no
request value (accession numbers, patient IDs) ever in a response."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.core.security import Role
from service.db.models.jobs import Job
from service.db.session import session_scope
from tests.api.conftest import bearer

ACCESSIONS = ["A20261125001", "A20261125002"]
POLICY = "dicom-basic-profile"  # shipped in policies/


@pytest.fixture()
def pacs(client: TestClient, tokens: dict[Role, str]) -> str:
    node = {"name": "pacs1", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}
    r = client.post("/api/v1/admin/nodes", json=node, headers=bearer(tokens[Role.admin]))
    assert r.status_code == 201, r.text
    return "pacs1"


def _submit(client: TestClient, token: str, pacs: str, **sel: object) -> dict:  # type: ignore[type-arg]
    body = {"pacs": pacs, "policy": POLICY, **(sel or {"accession_numbers": ACCESSIONS})}
    r = client.post("/api/v1/jobs", json=body, headers=bearer(token))
    assert r.status_code == 201, r.text
    for value in ACCESSIONS:
        assert value not in r.text
    out: dict = r.json()  # type: ignore[type-arg]
    return out


def test_submit_and_read(
    client: TestClient, tokens: dict[Role, str], pacs: str, migrated_db: str
) -> None:
    job = _submit(client, tokens[Role.service], pacs)
    assert job["state"] == "queued"
    assert job["selector"] == "accession_numbers" and job["requested"] == 2
    assert job["pacs"] == pacs and job["policy"] == POLICY
    with session_scope(migrated_db) as s:
        assert s.scalar(select(Job.actor).where(Job.id == job["id"])) == "token:test-service"

    for role in Role:  # every role may read the PHI-free view
        r = client.get(f"/api/v1/jobs/{job['id']}", headers=bearer(tokens[role]))
        assert r.status_code == 200 and r.json()["id"] == job["id"]
        for value in ACCESSIONS:
            assert value not in r.text

    q = _submit(
        client, tokens[Role.admin], pacs, query={"date_from": "2026-01-01", "date_to": "2026-01-31"}
    )
    listed = client.get("/api/v1/jobs", headers=bearer(tokens[Role.staff])).json()
    assert [j["id"] for j in listed["items"]] == [q["id"], job["id"]]
    one = client.get("/api/v1/jobs?limit=1&offset=1", headers=bearer(tokens[Role.staff])).json()
    assert [j["id"] for j in one["items"]] == [job["id"]]
    cancelled = client.get("/api/v1/jobs?state=cancelled", headers=bearer(tokens[Role.auditor]))
    assert cancelled.json()["items"] == []


def test_unknown_pacs_is_refused(client: TestClient, tokens: dict[Role, str], pacs: str) -> None:
    r = client.post(
        "/api/v1/jobs",
        json={"pacs": "elsewhere", "patient_ids": ["01017012345"]},
        headers=bearer(tokens[Role.service]),
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid-job-request"
    assert "no PACS node named 'elsewhere'" in r.json()["error"]["message"]
    assert "01017012345" not in r.text


def test_unknown_policy_is_refused(
    client: TestClient, tokens: dict[Role, str], pacs: str
) -> None:
    r = client.post(
        "/api/v1/jobs",
        json={"pacs": pacs, "policy": "no-such-policy", "accession_numbers": ACCESSIONS},
        headers=bearer(tokens[Role.admin]),
    )
    assert r.status_code == 422
    assert "policy: 'no-such-policy' cannot be loaded" in r.json()["error"]["message"]


def test_cancel_then_retry(client: TestClient, tokens: dict[Role, str], pacs: str) -> None:
    h = bearer(tokens[Role.admin])
    job = _submit(client, tokens[Role.service], pacs)
    running = client.post(f"/api/v1/jobs/{job['id']}/retry", headers=h)
    assert running.status_code == 409 and "only finished jobs" in running.json()["error"]["message"]

    r = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=h)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert "token:test-admin" in r.json()["reason"]
    again = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=h)
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid-job-request"

    r = client.post(f"/api/v1/jobs/{job['id']}/retry", headers=bearer(tokens[Role.service]))
    assert r.status_code == 200 and r.json()["state"] == "queued"


def test_unknown_job(client: TestClient, tokens: dict[Role, str]) -> None:
    h = bearer(tokens[Role.admin])
    missing = "f" * 32
    for method, path in [
        ("GET", f"/api/v1/jobs/{missing}"),
        ("POST", f"/api/v1/jobs/{missing}/cancel"),
        ("POST", f"/api/v1/jobs/{missing}/retry"),
        ("GET", f"/api/v1/jobs/{missing}/dead-letters"),
    ]:
        r = client.request(method, path, headers=h)
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == "job-not-found"
    r = client.post("/api/v1/dead-letters/4242/retry", headers=h)
    assert r.status_code == 404


def test_dead_letters_empty(client: TestClient, tokens: dict[Role, str], pacs: str) -> None:
    job = _submit(client, tokens[Role.service], pacs)
    h = bearer(tokens[Role.staff])
    assert client.get(f"/api/v1/jobs/{job['id']}/dead-letters", headers=h).json() == []
    assert client.get("/api/v1/dead-letters", headers=h).json() == []


def test_job_actions_are_audited_with_the_token_name(
    client: TestClient, tokens: dict[Role, str], pacs: str
) -> None:
    job = _submit(client, tokens[Role.service], pacs)
    client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=bearer(tokens[Role.admin]))
    client.post(f"/api/v1/jobs/{job['id']}/retry", headers=bearer(tokens[Role.service]))
    r = client.get("/api/v1/audit/events", headers=bearer(tokens[Role.auditor]))
    events = [
        (e["kind"], e["actor"], e["details"].get("job"))
        for e in r.json()
        if e["kind"].startswith("job.")
    ]
    assert events == [
        ("job.submitted", "token:test-service", job["id"]),
        ("job.cancelled", "token:test-admin", job["id"]),
        ("job.retried", "token:test-service", job["id"]),
    ]
    for value in ACCESSIONS:
        assert value not in r.text
