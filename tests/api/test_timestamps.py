"""Timestamps are RFC 3339 with an offset, in UTC, from the database layer up (SQLite handed
back naive datetimes, which every job view printed without an offset)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from fastapi.testclient import TestClient
from sqlalchemy import select

from service.core.security import Role
from service.db.models.jobs import DeadLetter, Job
from service.db.models.triage import TriageEntry
from service.db.session import session_scope
from service.db.states import JobState
from tests.api.conftest import bearer

OSLO_SUMMER = timezone(timedelta(hours=2))
AT = datetime(2026, 6, 1, 10, 30, 15, 123456, tzinfo=OSLO_SUMMER)  # 08:30:15.123456Z


def _job(session, job_id: str) -> None:  # type: ignore[no-untyped-def]
    session.add(Job(id=job_id, state=JobState.FAILED, pacs="pacs1", policy="p",
                    selector="patient_ids", requested=1, request_sealed=b"", finished_at=AT,
                    created_at=AT))
    session.add(DeadLetter(task="deidgate.retrieve_study", target="1", job_id=job_id,
                           reason="pacs-unreachable", attempts=5, created_at=AT))


def test_every_datetime_column_reads_back_aware_utc(migrated_db: str) -> None:
    with session_scope(migrated_db) as s:
        _job(s, "j1")
        s.add(TriageEntry(exam="2.25.1", patient_pseudonym="P", score=0.5, category="standard",
                          model_version="m", scored_at=datetime(2026, 6, 1, 8, 30)))  # naive: UTC
    with session_scope(migrated_db) as s:
        job = s.get(Job, "j1")
        assert job is not None
        for value in (job.created_at, job.finished_at, job.updated_at,
                      s.scalar(select(Job.finished_at)),  # Core selects too, not only the ORM
                      s.scalar(select(DeadLetter.created_at))):
            assert value is not None and value.tzinfo is UTC
        assert job.finished_at == AT  # the same instant, not the wall clock read as UTC
        assert s.scalar(select(TriageEntry.scored_at)) == datetime(2026, 6, 1, 8, 30, tzinfo=UTC)


def test_job_views_print_the_offset(
    client: TestClient, tokens: dict[Role, str], migrated_db: str
) -> None:
    with session_scope(migrated_db) as s:
        _job(s, "j2")
    h = bearer(tokens[Role.staff])
    view = client.get("/api/v1/jobs/j2", headers=h).json()
    listed = client.get("/api/v1/jobs", headers=h).json()["items"][0]
    dead = client.get("/api/v1/dead-letters", headers=h).json()[0]
    stamps = [view["created_at"], view["updated_at"], view["finished_at"], listed["created_at"],
              view["dead_letters"][0]["created_at"], dead["created_at"]]
    for stamp in stamps:
        assert stamp.endswith("Z"), stamp  # RFC 3339 "Z": UTC
        assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0)
    assert view["finished_at"] == "2026-06-01T08:30:15.123456Z"
