"""Error bodies: one shape everywhere, specific messages, and never a submitted value echoed
back (job requests carry accession numbers, patient IDs and study UIDs)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.core.config import Settings
from service.core.security import Role
from tests.api.conftest import bearer

HTTPS = "https://testserver"  # plain HTTP is refused outside development

# Look like PHI so any echo is caught: a name, a Norwegian national ID, an accession number.
PHI = ["HANSEN^KARI", "01017012345", "ACC99887766554433", "1.2.826.0.1.3680043.99.123456"]


@pytest.fixture()
def db_url(tmp_path: Path) -> str:
    """SQLite only here: error shaping happens above the database (the role matrix, auth, jobs
    and audit tests cover both back-ends), and a PostgreSQL database per case costs seconds."""
    return f"sqlite:///{tmp_path / 'deidgate.db'}"


def _error(r, status: int, code: str) -> str:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    for value in PHI:
        assert value not in r.text
    message: str = body["error"]["message"]
    return message


@pytest.fixture()
def service(tokens: dict[Role, str]) -> dict[str, str]:
    return bearer(tokens[Role.service])


def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    _error(client.get("/api/v1/no-such-thing"), 404, "not-found")
    _error(client.delete("/api/v1/health"), 405, "method-not-allowed")


def test_unknown_job_is_404_with_its_id(client: TestClient, service: dict[str, str]) -> None:
    msg = _error(client.get("/api/v1/jobs/" + "a" * 32, headers=service), 404, "job-not-found")
    assert "a" * 32 in msg


def test_path_parameter_with_phi_is_refused_without_echo(
    client: TestClient, service: dict[str, str]
) -> None:
    msg = _error(client.get("/api/v1/jobs/HANSEN^KARI", headers=service), 422, "invalid-request")
    assert "job_id" in msg


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({"pacs": "pacs1"}, "exactly one of"),
        (
            {"pacs": "pacs1", "accession_numbers": ["ACC99887766554433"]},
            "accession_numbers[0]: longer than 16",
        ),
        (
            {"pacs": "pacs1", "patient_ids": ["01017012345*"]},
            "patient_ids[0]: contains a wildcard",
        ),
        (
            {"pacs": "pacs1", "study_instance_uids": ["1.2.826.0.1.3680043.99.123456", "HANSEN"]},
            "study_instance_uids[1]: not a DICOM UID",
        ),
        ({"pacs": "pacs1", "patient_ids": "01017012345"}, "patient_ids: Input should be"),
        ({"pacs": "pacs1", "patient_ids": ["a"], "HANSEN^KARI": 1}, "unexpected field"),
        ({"pacs": "pacs1", "patient_ids": [1017012345]}, "patient_ids[0]"),
        (
            {"pacs": "pacs1", "query": {"date_from": "2024-02-01", "date_to": "2024-01-01"}},
            "date_from is after date_to",
        ),
        ({"pacs": "pacs1", "query": {"date_from": "01017012345", "date_to": "x"}}, "date_from"),
    ],
)
def test_job_validation_names_field_never_value(
    client: TestClient, service: dict[str, str], body: dict[str, object], fragment: str
) -> None:
    msg = _error(client.post("/api/v1/jobs", json=body, headers=service), 422, "invalid-request")
    assert fragment in msg, msg


def test_invalid_json_is_not_echoed(client: TestClient, service: dict[str, str]) -> None:
    r = client.post(
        "/api/v1/jobs",
        content=b'{"pacs": "p", "patient_ids": ["01017012345", HANSEN^KARI]}',
        headers={**service, "Content-Type": "application/json"},
    )
    assert "not valid JSON" in _error(r, 422, "invalid-request")


def test_query_parameter_errors(client: TestClient, tokens: dict[Role, str]) -> None:
    staff = bearer(tokens[Role.staff])
    msg = _error(
        client.get("/api/v1/triage/worklist?limit=0", headers=staff), 422, "invalid-request"
    )
    assert msg.startswith("query limit:")
    msg = _error(
        client.get("/api/v1/triage/worklist?category=HANSEN^KARI", headers=staff),
        422,
        "invalid-request",
    )
    assert "query category" in msg and "likely-normal" in msg


def test_unexpected_failure_is_a_bare_500(
    app: FastAPI, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    detail = f"could not store PatientName={PHI[0]} PatientID={PHI[1]}"

    @app.get("/api/v1/test-boom")
    def boom() -> None:
        raise RuntimeError(detail)

    with caplog.at_level(logging.ERROR, logger="service.api.errors"):
        msg = _error(client.get("/api/v1/test-boom"), 500, "internal")
    assert "internal error" in msg
    assert "RuntimeError" in caplog.text
    for value in PHI:
        assert value not in caplog.text


def test_missing_configured_site_key_is_503_and_not_created(
    settings: Settings, migrated_db: str, tokens: dict[Role, str], tmp_path: Path
) -> None:
    absent = tmp_path / "elsewhere" / "site.key"
    app = create_app(settings.model_copy(update={"key_file": absent}))
    with TestClient(app, base_url=HTTPS) as client:
        r = client.get("/api/v1/audit/chain", headers=bearer(tokens[Role.admin]))
    msg = _error(r, 503, "site-key")
    assert "server log" in msg and str(absent) not in r.text
    assert not absent.exists()
