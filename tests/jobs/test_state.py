"""The job state machine on both databases: one winner per claim, a stale claim taken over,
completion seen exactly once, failure reasons, dead letters revived, the sweep's choices."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from service.core.config import Settings
from service.core.keys import SiteKeys
from service.core.queues import TaskName
from service.db.base import utcnow
from service.db.models.dicom import ReceivedInstance
from service.db.models.jobs import Job, JobInstance, JobStudy
from service.db.session import get_sessionmaker, session_scope
from service.db.states import InstanceState, JobState
from service.dicom.uid_keys import uid_key
from service.jobs import ops, recovery
from service.jobs.transitions import (
    FoundStudy,
    add_studies,
    check_study,
    claim_instance,
    claim_job,
    claim_study,
    finish_instance,
    link_received,
    refresh_job,
    retrieval_finished,
)
from tests.jobs.conftest import submit

STUDY = "1.2.826.0.1.3680043.8.498.1"


def _received(db: str, keys: SiteKeys, n: int, study: str = STUDY) -> list[int]:
    ids = []
    with session_scope(db) as s:
        for i in range(n):
            r = ReceivedInstance(sop_key=uid_key(keys, f"{study}.{i}"), series_key="s",
                                 study_key=uid_key(keys, study), sop_class_uid="1.2",
                                 transfer_syntax="1.2.840.10008.1.2.1",
                                 spool_path=f"/spool/{i}.dcm", node="n1", calling_ae="PACS1",
                                 size_bytes=1, status="received")
            s.add(r)
            s.flush()
            ids.append(r.id)
    return ids


def _resolved_job(db: str, settings: Settings, keys: SiteKeys, expected: int = 2) -> tuple[str,
                                                                                         int]:
    S = get_sessionmaker(db)
    with S() as s:
        job_id = submit(s, settings, keys)
        assert claim_job(s, job_id, 60) is not None
        assert claim_job(s, job_id, 60) is None  # a duplicate resolve does nothing
        [sid] = add_studies(s, keys, job_id, [FoundStudy(STUDY, expected)])
        assert add_studies(s, keys, job_id, [FoundStudy(STUDY, expected)]) == [sid]
    return job_id, sid


def test_happy_path_completes_once(settings: Settings, site_keys: SiteKeys, jobs_db: str) -> None:
    job_id, sid = _resolved_job(jobs_db, settings, site_keys)
    S = get_sessionmaker(jobs_db)
    with S() as s:
        assert claim_study(s, sid, 60) is not None
        assert claim_study(s, sid, 60) is None
        rows = [link_received(s, rid) for rid in _received(jobs_db, site_keys, 2)]
        assert all(needs and row and row.job_id == job_id for row, needs in rows)
        again, _ = link_received(s, rows[0][0].received_id)
        assert again is not None and again.id == rows[0][0].id  # duplicate delivery
        retrieval_finished(s, sid, complete=True, reason=None)
        assert refresh_job(s, job_id) == "de-identifying"
        ids = [r.id for r, _ in rows]
        assert claim_instance(s, ids[0], 60) is not None
        assert claim_instance(s, ids[0], 60) is None  # one winner
        finish_instance(s, ids[0], state=InstanceState.WRITTEN, pseudo_study_uid="2.25.1")
        assert not check_study(s, sid)  # one still pending
        assert claim_instance(s, ids[1], 60) is not None
        finish_instance(s, ids[1], state=InstanceState.REFUSED, reason="pixel-refused")
        assert check_study(s, sid) is True
        assert check_study(s, sid) is False  # the completion hook fires once
        assert refresh_job(s, job_id) == "done"
        v = ops.get_job(s, job_id)
    assert v is not None and v.finished_at is not None
    c = v.counts
    assert (c.studies_complete, c.instances_expected, c.instances_received,
            c.instances_deidentified, c.instances_refused) == (1, 2, 2, 1, 1)
    assert v.studies[0].study_uid == "2.25.1"


def test_a_lazy_score_flag_is_asked_once_per_study(
    settings: Settings, site_keys: SiteKeys, jobs_db: str
) -> None:
    """The completion check runs after every instance; whether a model is configured (a read
    of the model registry) is asked only when the study completes."""
    job_id, sid = _resolved_job(jobs_db, settings, site_keys)
    asked: list[int] = []

    def enabled() -> bool:
        asked.append(1)
        return True

    S = get_sessionmaker(jobs_db)
    with S() as s:
        claim_study(s, sid, 60)
        ids = [row.id for row, _ in (link_received(s, rid)  # type: ignore[union-attr]
                                     for rid in _received(jobs_db, site_keys, 2))]
        retrieval_finished(s, sid, complete=True, reason=None)
        claim_instance(s, ids[0], 60)
        finish_instance(s, ids[0], state=InstanceState.WRITTEN, pseudo_study_uid="2.25.1")
        assert not check_study(s, sid, score=enabled) and asked == []
        claim_instance(s, ids[1], 60)
        finish_instance(s, ids[1], state=InstanceState.WRITTEN, pseudo_study_uid="2.25.1")
        assert check_study(s, sid, score=enabled) is True and asked == [1]
        assert check_study(s, sid, score=enabled) is False and asked == [1]
        assert refresh_job(s, job_id) == "scoring"


def test_stale_claim_is_taken_over_and_swept(
    settings: Settings, site_keys: SiteKeys, jobs_db: str
) -> None:
    _, sid = _resolved_job(jobs_db, settings, site_keys, expected=1)
    S = get_sessionmaker(jobs_db)
    with S() as s:
        claim_study(s, sid, 60)
        [rid] = _received(jobs_db, site_keys, 1)
        row, _ = link_received(s, rid)
        assert row is not None and claim_instance(s, row.id, 60) is not None
        # the worker holding it is SIGKILLed: its claim ages past the stale limit
        s.execute(update(JobInstance).values(claimed_at=utcnow() - timedelta(seconds=120)))
        s.commit()
        res = recovery.sweep(s, stale_s=60)
        assert (row.id, "n1") in res.instances
        assert claim_instance(s, row.id, 60) is not None  # taken over
        assert recovery.sweep(s, stale_s=60).instances == []  # a fresh claim is left alone


def test_unlinked_and_queued_work_is_found_at_startup(
    settings: Settings, site_keys: SiteKeys, jobs_db: str
) -> None:
    with session_scope(jobs_db) as s:
        job_id = submit(s, settings, site_keys)
    [rid] = _received(jobs_db, site_keys, 1, study="1.2.3.99")
    with get_sessionmaker(jobs_db)() as s:
        assert recovery.sweep(s, stale_s=60).jobs == []  # just submitted: its message is in flight
        res = recovery.sweep(s, stale_s=60, startup=True)
        assert res.jobs == [job_id] and res.unlinked == [rid]
        row, needs = link_received(s, rid)
        assert needs and row is not None and row.job_id is None  # no job asked: still cleaned


def test_dead_letter_fails_the_job_and_retry_revives(
    settings: Settings, site_keys: SiteKeys, jobs_db: str
) -> None:
    job_id, sid = _resolved_job(jobs_db, settings, site_keys, expected=1)
    S = get_sessionmaker(jobs_db)
    with S() as s:
        claim_study(s, sid, 60)
        [rid] = _received(jobs_db, site_keys, 1)
        row, _ = link_received(s, rid)
        assert row is not None
        retrieval_finished(s, sid, complete=True, reason=None)
        recovery.dead_letter(s, task=TaskName.DEIDENTIFY_INSTANCE, target=str(row.id),
                        reason="internal: OSError", attempts=6)
        assert check_study(s, sid) is False
        assert refresh_job(s, job_id) == "failed"
        v = ops.get_job(s, job_id)
        assert v is not None and v.counts.dead_letters == 1 and v.counts.instances_failed == 1
        assert "study 0: 1 instance(s) could not be de-identified" in (v.reason or "")
        [dl] = ops.list_dead_letters(s, job_id=job_id)
        assert dl.reason == "internal: OSError" and dl.attempts == 6
        v = ops.retry_job(s, job_id, actor="t", settings=settings, keys=site_keys)
        assert v.state == "retrieving" and v.counts.dead_letters == 0
        assert s.get(JobInstance, row.id, populate_existing=True).state == "pending"
        assert s.get(JobStudy, sid, populate_existing=True).state == "pending"


def test_cancelled_job_stops_claiming(settings: Settings, site_keys: SiteKeys,
                                      jobs_db: str) -> None:
    job_id, sid = _resolved_job(jobs_db, settings, site_keys)
    with get_sessionmaker(jobs_db)() as s:
        ops.cancel_job(s, job_id, actor="t")
        assert claim_study(s, sid, 60) is None
        assert s.get(Job, job_id).state == JobState.CANCELLED
        assert refresh_job(s, job_id) == "cancelled"
