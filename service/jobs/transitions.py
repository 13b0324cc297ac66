"""The job state machine, in the database: every transition is a conditional UPDATE.

Workers, the listener hook and the API all move jobs through these functions. A transition only
happens from the states it names (the machines are drawn in ``service.db.states``), so a
duplicated or redelivered task finds nothing to do (that is what makes tasks idempotent), and
the sweep (``service.jobs.recovery``) can re-enqueue anything unfinished without creating
duplicates. Nothing here touches DICOM or the broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Update, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.core.keys import SiteKeys
from service.db.base import utcnow
from service.db.models.dicom import ReceivedInstance
from service.db.models.jobs import Job, JobInstance, JobStudy
from service.db.states import (
    ACTIVE_STUDY_STATES,
    COMMITTED_INSTANCE_STATES,
    RUNNING_JOB_STATES,
    TERMINAL_INSTANCE_STATES,
    TERMINAL_JOB_STATES,
    InstanceState,
    JobState,
    ReceivedStatus,
    StudyState,
)
from service.jobs.schemas import seal, study_key


def conditional_update(model: Any) -> Update:
    """An UPDATE whose WHERE names the states it moves from; rows are re-read afterwards, so
    no in-session evaluation."""
    return update(model).execution_options(synchronize_session=False)


def new_job_id() -> str:
    return uuid.uuid4().hex


def _moved(res: Any) -> bool:
    return bool(res.rowcount == 1)


# --- resolve -------------------------------------------------------------------------------------

def claim_job(session: Session, job_id: str, stale_s: int) -> Job | None:
    """queued -> resolving (or a resolving job whose worker died)."""
    stale = utcnow() - timedelta(seconds=stale_s)
    res = session.execute(conditional_update(Job).where(
        Job.id == job_id,
        or_(Job.state == JobState.QUEUED,
            and_(Job.state == JobState.RESOLVING, Job.updated_at < stale)),
    ).values(state=JobState.RESOLVING, attempts=Job.attempts + 1, updated_at=utcnow()))
    session.commit()
    return session.get(Job, job_id, populate_existing=True) if _moved(res) else None


@dataclass
class FoundStudy:
    study_uid: str
    expected: int | None


def add_studies(
    session: Session, keys: SiteKeys, job_id: str, found: list[FoundStudy]
) -> list[int]:
    """Record what C-FIND found, once (a second resolve of the same job adds nothing)."""
    have = session.scalar(select(func.count()).select_from(JobStudy)
                          .where(JobStudy.job_id == job_id)) or 0
    if not have:
        for i, f in enumerate(found):
            session.add(JobStudy(
                job_id=job_id, idx=i, study_key=study_key(keys, f.study_uid),
                uid_sealed=seal(keys, f.study_uid, aad=f"study:{job_id}:{i}"),
                state=StudyState.PENDING, expected=f.expected, retrieved=False, attempts=0,
                forwarded=False,
            ))
    resolving = conditional_update(Job).where(Job.id == job_id, Job.state == JobState.RESOLVING)
    if not found and not have:
        session.execute(resolving.values(
            state=JobState.FAILED, reason="no-studies: the PACS returned no matching study",
            finished_at=utcnow()))
    else:
        session.execute(resolving.values(state=JobState.RETRIEVING))
    session.commit()
    return list(session.scalars(select(JobStudy.id).where(
        JobStudy.job_id == job_id, JobStudy.state == StudyState.PENDING).order_by(JobStudy.idx)))


def fail_job(session: Session, job_id: str, reason: str) -> None:
    session.execute(conditional_update(Job)
                    .where(Job.id == job_id, Job.state.not_in(TERMINAL_JOB_STATES))
                    .values(state=JobState.FAILED, reason=reason, finished_at=utcnow()))
    session.commit()


# --- retrieve ------------------------------------------------------------------------------------

def claim_study(session: Session, study_id: int, stale_s: int) -> JobStudy | None:
    stale = utcnow() - timedelta(seconds=stale_s)
    active_job = select(Job.id).where(Job.state.not_in(TERMINAL_JOB_STATES)).scalar_subquery()
    res = session.execute(conditional_update(JobStudy).where(
        JobStudy.id == study_id,
        JobStudy.job_id.in_(active_job),
        or_(JobStudy.state == StudyState.PENDING,
            and_(JobStudy.state == StudyState.RETRIEVING, JobStudy.updated_at < stale)),
    ).values(state=StudyState.RETRIEVING, attempts=JobStudy.attempts + 1, updated_at=utcnow()))
    session.commit()
    if not _moved(res):
        return None
    return session.get(JobStudy, study_id, populate_existing=True)


def retrieval_finished(
    session: Session, study_id: int, *, complete: bool, reason: str | None,
    expected: int | None = None, skipped: int = 0, skipped_reason: str | None = None,
) -> None:
    """``expected`` is then the count of what was asked for: a study whose series were
    skipped by the filter is complete once the series it kept have arrived."""
    values: dict[str, Any] = {"retrieved": True, "skipped": skipped,
                              "skipped_reason": skipped_reason}
    if expected is not None:
        values["expected"] = expected
    if complete:
        values["state"] = StudyState.DEIDENTIFYING
    else:
        values.update(state=StudyState.FAILED, reason=reason or "retrieval incomplete")
    session.execute(conditional_update(JobStudy)
                    .where(JobStudy.id == study_id, JobStudy.state == StudyState.RETRIEVING)
                    .values(**values))
    session.commit()


def release_study(session: Session, study_id: int) -> None:
    """Give a study back for another attempt (after a transient failure of the move)."""
    session.execute(conditional_update(JobStudy)
                    .where(JobStudy.id == study_id, JobStudy.state == StudyState.RETRIEVING)
                    .values(state=StudyState.PENDING))
    session.commit()


# --- instances -----------------------------------------------------------------------------------

def _active_study(session: Session, key: str) -> JobStudy | None:
    return session.scalars(
        select(JobStudy).join(Job, Job.id == JobStudy.job_id)
        .where(JobStudy.study_key == key, JobStudy.state.in_(ACTIVE_STUDY_STATES),
               Job.state.not_in(TERMINAL_JOB_STATES))
        .order_by(Job.created_at.desc()).limit(1)
    ).first()


def link_received(
    session: Session, received_id: int, *, study: JobStudy | None = None
) -> tuple[JobInstance | None, bool]:
    """Attach an instance the listener stored to the active job study it belongs to (matched by
    the keyed study-UID hash the listener recorded). The row takes the node of the received
    file, never the linker's: a sweep or retrieve task on another host links it too.

    Returns the row and whether it needs de-identifying (False for a duplicate delivery).
    Instances no job asked for are still de-identified (job_id None): identified data is never
    left lying in the spool.
    """
    # Locked (PostgreSQL: FOR UPDATE; SQLite has one writer) so two linkers of one file, the
    # listener's hook and a sweep on another host, cannot both find no row and insert two.
    ri = session.get(ReceivedInstance, received_id, with_for_update=True)
    if ri is None:
        return None, False
    study = study or _active_study(session, ri.study_key)
    job_id = study.job_id if study else None
    q = select(JobInstance).where(JobInstance.received_id == ri.id)
    q = q.where(JobInstance.job_id == job_id) if job_id else q.where(JobInstance.job_id.is_(None))
    existing = session.scalars(q).first()
    if existing is not None:
        return existing, existing.state == InstanceState.PENDING
    # the same file already handled for another job: share its outcome, do not redo it
    done = session.scalars(select(JobInstance).where(
        JobInstance.received_id == ri.id,
        JobInstance.state.in_(COMMITTED_INSTANCE_STATES))).first()
    row = JobInstance(received_id=ri.id, job_id=job_id, study_id=study.id if study else None,
                      spool_path=ri.spool_path, node=ri.node, state=InstanceState.PENDING,
                      attempts=0)
    if done is not None:
        row.state, row.out_path, row.reason = done.state, done.out_path, done.reason
    session.add(row)
    if job_id and ri.job_id is None:
        ri.job_id = job_id
    if ri.status == ReceivedStatus.RECEIVED:
        ri.status = ReceivedStatus.QUEUED
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return session.scalars(q).first(), False
    return row, row.state == InstanceState.PENDING


def adopt_known(session: Session, study_id: int) -> list[tuple[int, str]]:
    """After a retrieval, attach instances of the study the listener already held (it does not
    spool a duplicate SOP instance twice, so a re-requested study may arrive as nothing).
    Returns (instance id, node holding its file) for each that needs de-identifying."""
    st = session.get(JobStudy, study_id)
    if st is None:
        return []
    linked = set(session.scalars(select(JobInstance.received_id)
                                 .where(JobInstance.study_id == study_id)))
    todo: list[tuple[int, str]] = []
    for rid in list(session.scalars(select(ReceivedInstance.id).where(
            ReceivedInstance.study_key == st.study_key).order_by(ReceivedInstance.id))):
        if rid in linked:
            continue
        row, needs = link_received(session, rid, study=st)
        if row is not None and needs:
            todo.append((row.id, row.node))
    return todo


def claim_instance(session: Session, instance_id: int, stale_s: int) -> JobInstance | None:
    """pending -> processing, or take over a stale claim (its worker died); one winner only."""
    now = utcnow()
    stale = now - timedelta(seconds=stale_s)
    res = session.execute(conditional_update(JobInstance).where(
        JobInstance.id == instance_id,
        or_(JobInstance.state == InstanceState.PENDING,
            and_(JobInstance.state.in_((InstanceState.PROCESSING, *COMMITTED_INSTANCE_STATES)),
                 JobInstance.claimed_at < stale)),
    ).values(state=InstanceState.PROCESSING, claimed_at=now, attempts=JobInstance.attempts + 1))
    session.commit()
    if not _moved(res):
        return None
    return session.get(JobInstance, instance_id, populate_existing=True)


def finish_instance(
    session: Session, instance_id: int, *, state: InstanceState, out_path: str | None = None,
    reason: str | None = None, pseudo_study_uid: str | None = None,
) -> int | None:
    """Record the outcome; returns the study id so the caller can check the study."""
    session.execute(conditional_update(JobInstance).where(JobInstance.id == instance_id).values(
        state=state, out_path=out_path, reason=reason, claimed_at=None))
    row = session.get(JobInstance, instance_id, populate_existing=True)
    sid = row.study_id if row else None
    if sid is not None and pseudo_study_uid:
        session.execute(conditional_update(JobStudy)
                        .where(JobStudy.id == sid, JobStudy.pseudo_uid.is_(None))
                        .values(pseudo_uid=pseudo_study_uid))
    session.commit()
    return sid


def release_instance(session: Session, instance_id: int) -> None:
    session.execute(conditional_update(JobInstance)
                    .where(JobInstance.id == instance_id,
                           JobInstance.state == InstanceState.PROCESSING)
                    .values(state=InstanceState.PENDING, claimed_at=None))
    session.commit()


def check_study(session: Session, study_id: int, *,
                score: bool | Callable[[], bool] = False) -> bool:
    """de-identifying -> complete/failed once every received instance is done; True on the
    transition (exactly one caller sees True, so the completion hook runs once).

    ``score``: a model is configured, so a fully de-identified study goes to ``scoring``
    instead of ``complete`` (the score task completes it): the job cannot be derived ``done``
    between the two steps. A callable is asked only then, so a caller that checks after every
    instance (``workers.tasks.completion``) reads the model registry once per study."""
    s = session.get(JobStudy, study_id, populate_existing=True)
    if s is None or s.state != StudyState.DEIDENTIFYING or not s.retrieved:
        return False
    counts = dict(session.execute(
        select(JobInstance.state, func.count()).where(JobInstance.study_id == study_id)
        .group_by(JobInstance.state)).all())
    if any(st not in TERMINAL_INSTANCE_STATES for st in counts):
        return False
    bad = counts.get(InstanceState.FAILED, 0) + counts.get(InstanceState.DEAD_LETTERED, 0)
    received = sum(counts.values())
    if bad:
        new, reason = StudyState.FAILED, f"{bad} instance(s) could not be de-identified"
    elif s.expected is not None and received < s.expected:
        new, reason = StudyState.FAILED, f"received {received} of {s.expected} instances"
    elif counts.get(InstanceState.WRITTEN, 0) and (score() if callable(score) else score):
        new, reason = StudyState.SCORING, None
    else:
        new, reason = StudyState.COMPLETE, None
    res = session.execute(conditional_update(JobStudy).where(JobStudy.id == study_id,
                                                 JobStudy.state == StudyState.DEIDENTIFYING)
                          .values(state=new, reason=reason))
    session.commit()
    return _moved(res) and new in (StudyState.COMPLETE, StudyState.SCORING)


def scoring_finished(session: Session, study_id: int, *, reason: str | None = None) -> bool:
    """scoring -> complete (``reason`` says why no score exists, when none does)."""
    res = session.execute(conditional_update(JobStudy).where(
        JobStudy.id == study_id, JobStudy.state == StudyState.SCORING)
        .values(state=StudyState.COMPLETE, reason=reason, updated_at=utcnow()))
    session.commit()
    return _moved(res)


def refresh_job(session: Session, job_id: str) -> JobState | None:
    """Derive the job's state from its studies; terminal states are never left by this."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.state not in RUNNING_JOB_STATES:
        return job.state if job else None
    states = list(session.scalars(select(JobStudy.state).where(JobStudy.job_id == job_id)))
    values: dict[str, Any]
    if any(s in (StudyState.PENDING, StudyState.RETRIEVING) for s in states):
        values = {"state": JobState.RETRIEVING}
    elif any(s == StudyState.DEIDENTIFYING for s in states):
        values = {"state": JobState.DEIDENTIFYING}
    elif any(s == StudyState.SCORING for s in states):
        values = {"state": JobState.SCORING}
    else:
        failed = [(s.idx, s.reason) for s in session.scalars(
            select(JobStudy).where(JobStudy.job_id == job_id, JobStudy.state == StudyState.FAILED)
            .order_by(JobStudy.idx))]
        if failed:
            detail = "; ".join(f"study {i}: {r}" for i, r in failed[:10])
            values = {"state": JobState.FAILED, "finished_at": utcnow(),
                      "reason": f"{len(failed)} of {len(states)} studies failed ({detail})"}
        else:
            values = {"state": JobState.DONE, "finished_at": utcnow(), "reason": None}
    if values["state"] != job.state:
        session.execute(conditional_update(Job).where(Job.id == job_id,
                                          Job.state.not_in(TERMINAL_JOB_STATES)).values(**values))
        session.commit()
    return JobState(values["state"])


