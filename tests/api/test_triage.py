"""The triage worklist: ranking, ties, paging, category filter, and what it shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError

from service.core.security import Role
from service.db.models.triage import TriageEntry
from service.db.session import session_scope
from tests.api.conftest import bearer

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
# (exam, score, category, minutes after T0)
ENTRIES = [
    ("2.25.101", 0.12, "likely-normal", 0),
    ("2.25.102", 0.91, "priority", 5),
    ("2.25.103", 0.55, "standard", 1),
    ("2.25.104", 0.91, "priority", 2),  # ties with 102 but waited longer: first
    ("2.25.105", 0.03, "likely-normal", 3),
    ("2.25.106", 0.47, "standard", 4),
]


@pytest.fixture()
def filled(migrated_db: str) -> None:
    with session_scope(migrated_db) as s:
        for exam, score, category, minutes in ENTRIES:
            s.add(
                TriageEntry(
                    exam=exam,
                    patient_pseudonym=f"PSN-{exam[-3:]}",
                    score=score,
                    category=category,
                    model_version="mgtriage-0.1",
                    scored_at=T0 + timedelta(minutes=minutes),
                )
            )


def _get(client: TestClient, token: str, query: str = "") -> dict:  # type: ignore[type-arg]
    r = client.get(f"/api/v1/triage/worklist{query}", headers=bearer(token))
    assert r.status_code == 200, r.text
    body: dict = r.json()  # type: ignore[type-arg]
    return body


@pytest.mark.usefixtures("filled")
def test_ranked_by_score_then_waiting_time(client: TestClient, tokens: dict[Role, str]) -> None:
    body = _get(client, tokens[Role.staff])
    assert body["total"] == 6
    assert [i["exam"] for i in body["items"]] == [
        "2.25.104", "2.25.102", "2.25.103", "2.25.106", "2.25.101", "2.25.105"
    ]
    assert [i["rank"] for i in body["items"]] == [1, 2, 3, 4, 5, 6]
    first = body["items"][0]
    assert first == {
        "rank": 1,
        "exam": "2.25.104",
        "patient_pseudonym": "PSN-104",
        "score": 0.91,
        "category": "priority",
        "model_version": "mgtriage-0.1",
        "scored_at": "2026-11-25T08:02:00Z",
    }


@pytest.mark.usefixtures("filled")
def test_paging_and_category(client: TestClient, tokens: dict[Role, str]) -> None:
    token = tokens[Role.admin]
    page2 = _get(client, token, "?limit=2&offset=2")
    assert [(i["rank"], i["exam"]) for i in page2["items"]] == [(3, "2.25.103"), (4, "2.25.106")]
    assert page2["total"] == 6 and page2["limit"] == 2 and page2["offset"] == 2
    normal = _get(client, token, "?category=likely-normal")
    assert [i["exam"] for i in normal["items"]] == ["2.25.101", "2.25.105"]
    assert normal["total"] == 2
    assert _get(client, token, "?offset=10")["items"] == []


def test_empty_worklist(client: TestClient, tokens: dict[Role, str]) -> None:
    assert _get(client, tokens[Role.staff]) == {"total": 0, "limit": 100, "offset": 0, "items": []}


def test_one_row_per_exam_and_known_categories_only(migrated_db: str) -> None:
    row = {"patient_pseudonym": "P", "score": 0.5, "model_version": "m", "scored_at": T0}
    with session_scope(migrated_db) as s:
        s.add(TriageEntry(exam="2.25.1", category="standard", **row))
    with pytest.raises(IntegrityError), session_scope(migrated_db) as s:
        s.add(TriageEntry(exam="2.25.1", category="priority", **row))
    with pytest.raises(IntegrityError), session_scope(migrated_db) as s:
        s.add(TriageEntry(exam="2.25.2", category="urgent", **row))
