"""The triage API: ranking with the ceiling, paging, filters, what an item shows, one exam,
marking read, revealing an accession number on record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError

from service.audit.store import AuditStore
from service.core.config import Settings
from service.core.keys import SiteKeys
from service.core.security import Role
from service.db.base import utcnow
from service.db.models.triage import TriageEntry
from service.db.session import session_scope
from synthetic.exam import fresh_exam
from tests.api.conftest import bearer
from tests.triage.seed import add_deidentified, add_exam
from tests.web.seed import deidentify

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
# (exam, score, category, minutes after T0 it arrived); the ceiling (3 days) puts the
# oldest exam first whatever its score.
ENTRIES = [
    ("2.25.101", 0.12, "likely-normal", 0),
    ("2.25.102", 0.91, "priority", 5),
    ("2.25.103", 0.55, "standard", 1),
    ("2.25.104", 0.91, "priority", 2),  # ties with 102 but waited longer: first of the two
    ("2.25.105", 0.03, "likely-normal", 3),
    ("2.25.106", 0.47, "standard", 4),
]
AS_OF = "2026-11-25T12:00:00Z"  # 4 hours after T0: nothing is over a 3-day ceiling


@pytest.fixture()
def filled(migrated_db: str) -> None:
    with session_scope(migrated_db) as s:
        for exam, score, category, minutes in ENTRIES:
            add_exam(s, exam, score, category, arrived=T0 + timedelta(minutes=minutes))


def _get(client: TestClient, token: str, query: str = "") -> dict:  # type: ignore[type-arg]
    r = client.get(f"/api/v1/triage/worklist{query}", headers=bearer(token))
    assert r.status_code == 200, r.text
    body: dict = r.json()  # type: ignore[type-arg]
    return body


@pytest.mark.usefixtures("filled")
def test_ranked_by_score_then_waiting_time(client: TestClient, tokens: dict[Role, str]) -> None:
    body = _get(client, tokens[Role.staff], f"?as_of={AS_OF}")
    assert body["total"] == 6 and body["over_ceiling"] == 0
    assert body["max_wait_minutes"] == 4320 and body["as_of"] == AS_OF
    assert [i["exam"] for i in body["items"]] == [
        "2.25.104", "2.25.102", "2.25.103", "2.25.106", "2.25.101", "2.25.105"
    ]
    assert [i["rank"] for i in body["items"]] == [1, 2, 3, 4, 5, 6]
    first = body["items"][0]
    views = first.pop("views")
    assert first == {
        "rank": 1, "exam": "2.25.104", "patient_pseudonym": "PSN-104", "score": 0.91,
        "category": "priority", "model_name": "mgtriage-demo", "model_version": "0.1",
        "demo": True, "complete": True, "note": None, "state": "unread", "read_at": None,
        "read_by": None, "arrived_at": "2026-11-25T08:02:00Z",
        "waiting_s": 4 * 3600 - 120, "over_ceiling": False,
        "scored_at": "2026-11-25T08:03:00Z",
    }
    assert [(v["laterality"], v["view"]) for v in views] == [
        ("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]
    assert "file" not in views[0]  # where the output lives is the server's business


@pytest.mark.usefixtures("filled")
def test_the_ceiling_puts_the_longest_wait_first(
    settings: Settings, migrated_db: str, tokens: dict[Role, str]
) -> None:
    from service.api.app import create_app

    app = create_app(settings.model_copy(update={"triage_max_wait_minutes": 238}))
    with TestClient(app) as c:
        body = _get(c, tokens[Role.staff], f"?as_of={AS_OF}")
    # 101 and 103 have waited 240 and 239 minutes: over 238, first, longest wait first
    assert [i["exam"] for i in body["items"]][:3] == ["2.25.101", "2.25.103", "2.25.104"]
    assert [i["over_ceiling"] for i in body["items"]][:3] == [True, True, False]
    assert body["over_ceiling"] == 2 and body["max_wait_minutes"] == 238


@pytest.mark.usefixtures("filled")
def test_paging_filters_and_category(client: TestClient, tokens: dict[Role, str]) -> None:
    token = tokens[Role.admin]
    page2 = _get(client, token, f"?limit=2&offset=2&as_of={AS_OF}")
    assert [(i["rank"], i["exam"]) for i in page2["items"]] == [(3, "2.25.103"), (4, "2.25.106")]
    assert page2["total"] == 6 and page2["limit"] == 2 and page2["offset"] == 2
    normal = _get(client, token, "?category=likely-normal")
    assert [i["exam"] for i in normal["items"]] == ["2.25.101", "2.25.105"]
    assert normal["total"] == 2
    assert _get(client, token, "?offset=10")["items"] == []
    assert _get(client, token, "?date_from=2026-11-26")["total"] == 0
    assert _get(client, token, "?date_from=2026-11-25&date_to=2026-11-25")["total"] == 6
    assert _get(client, token, "?date_from=2026-11-26&date_to=2026-11-25")["total"] == 0
    r = client.post("/api/v1/triage/exams/2.25.104/read", headers=bearer(token))
    assert r.status_code == 200
    unread = _get(client, token, "?unread=true")
    assert unread["total"] == 5 and "2.25.104" not in [i["exam"] for i in unread["items"]]
    assert client.get("/api/v1/triage/worklist?category=urgent",
                      headers=bearer(token)).status_code == 422
    assert client.get("/api/v1/triage/worklist?as_of=2026-11-25T12:00:00",
                      headers=bearer(token)).status_code == 422  # no offset: ambiguous


def test_empty_worklist(client: TestClient, tokens: dict[Role, str]) -> None:
    body = _get(client, tokens[Role.staff])
    assert (body["total"], body["items"], body["limit"], body["offset"]) == (0, [], 100, 0)
    assert body["as_of"].endswith("Z") or body["as_of"].endswith("+00:00")


@pytest.mark.usefixtures("filled")
def test_exam_and_mark_read(client: TestClient, tokens: dict[Role, str],
                            settings: Settings) -> None:
    staff = bearer(tokens[Role.staff])
    r = client.get("/api/v1/triage/exams/2.25.103", headers=staff)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_sha256"] == "ab" * 32 and body["device_uid"] == "2.25.424242"
    assert body["preprocessing_version"] == "mammo-1" and body["has_accession"] is False
    assert body["state"] == "unread" and "rank" not in body
    before = utcnow()
    r = client.post("/api/v1/triage/exams/2.25.103/read", headers=staff)
    assert r.status_code == 200, r.text
    read = r.json()
    assert read["read_by"] == "token:test-staff" and read["already_read"] is False
    assert datetime.fromisoformat(read["read_at"]) >= before
    again = client.post("/api/v1/triage/exams/2.25.103/read", headers=bearer(tokens[Role.admin]))
    assert again.json()["already_read"] is True
    assert again.json()["read_by"] == "token:test-staff"
    detail = client.get("/api/v1/triage/exams/2.25.103", headers=staff).json()
    assert detail["state"] == "read" and detail["read_by"] == "token:test-staff"
    for path in ("/api/v1/triage/exams/2.25.999", "/api/v1/triage/exams/2.25.999/read"):
        method = "GET" if path.endswith("999") else "POST"
        r = client.request(method, path, headers=staff)
        assert r.status_code == 404 and r.json()["error"]["code"] == "exam-unknown"
    with session_scope(settings.db_url) as s:
        events = AuditStore(s, SiteKeys.for_settings(settings)).events("triage-read")
    assert [e.actor for e in events] == ["token:test-staff"]


def test_reveal_accession(client: TestClient, tokens: dict[Role, str], settings: Settings,
                          migrated_db: str, tmp_path: Path) -> None:
    keys = SiteKeys.for_settings(settings)
    exam = fresh_exam(tmp_path / "exam", index=21)
    out = [r.out_path for r in deidentify(settings, keys, exam) if r.out_path]
    with session_scope(migrated_db) as s:
        uid = add_deidentified(s, settings.output_dir, out, 0.7, "priority", arrived=T0).exam
    url = f"/api/v1/triage/exams/{uid}/reveal"
    staff = bearer(tokens[Role.staff])
    for body in ({"reason": "ticket 42 follow-up"}, {"reason": "ticket 42 follow-up",
                                                     "confirm": False},
                 {"reason": "short", "confirm": True}, {"reason": "x" * 12, "confirm": True}):
        r = client.post(url, json=body, headers=staff)
        assert r.status_code == 422, (body, r.text)
    r = client.post(url, json={"reason": "recall ticket 42 follow-up", "confirm": True},
                    headers=staff)
    assert r.status_code == 200, r.text
    assert r.json() == {"exam": uid, "accession_number": exam.accession,
                        "actor": "token:test-staff"}
    assert r.headers["cache-control"] == "no-store"
    with session_scope(migrated_db) as s:
        events = AuditStore(s, keys).reidentifications()
    assert len(events) == 1 and events[0].actor == "token:test-staff"
    assert events[0].details is not None and events[0].details["exam"] == uid
    r = client.post("/api/v1/triage/exams/2.25.5/reveal",
                    json={"reason": "recall ticket 42 follow-up", "confirm": True}, headers=staff)
    assert r.status_code == 404 and r.json()["error"]["code"] == "exam-unknown"


def test_one_row_per_exam_and_known_categories_only(migrated_db: str) -> None:
    row = {"patient_pseudonym": "P", "score": 0.5, "model_version": "m", "scored_at": T0}
    with session_scope(migrated_db) as s:
        s.add(TriageEntry(exam="2.25.1", category="standard", **row))
    with pytest.raises(IntegrityError), session_scope(migrated_db) as s:
        s.add(TriageEntry(exam="2.25.1", category="priority", **row))
    with pytest.raises(IntegrityError), session_scope(migrated_db) as s:
        s.add(TriageEntry(exam="2.25.2", category="urgent", **row))
