"""The job operations the CLI and the REST API share (one implementation, two front ends).

Each operation commits its own transaction before it enqueues anything, so a worker never sees a
task for a row it cannot read yet; if the broker is down, the job still exists in the database
and the sweep enqueues it later (nothing is lost by a failed publish).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import CursorResult, func, select
from sqlalchemy.orm import Session

from service.audit.store import AuditStore
from service.core.config import Settings
from service.core.errors import DeidgateError
from service.core.keys import SiteKeys
from service.core.queues import TASKS, TaskName, node_name
from service.db.base import utcnow
from service.db.models.jobs import DeadLetter, Job, JobInstance, JobStudy
from service.db.models.triage import ScoreResult
from service.db.states import (
    TERMINAL_JOB_STATES,
    DeadLetterState,
    InstanceState,
    JobState,
    StudyState,
)
from service.dicom import admin
from service.jobs import policy_check
from service.jobs.recovery import WORK, revive
from service.jobs.routing import enqueue, enqueue_deidentify, instance_nodes
from service.jobs.schemas import (
    Counts,
    DeadLetterView,
    InvalidJobRequest,
    JobNotFound,
    JobRequest,
    JobView,
    StudyView,
    parse_job_request,
    seal,
)
from service.jobs.transitions import conditional_update, new_job_id

log = logging.getLogger(__name__)

__all__ = [
    "InvalidJobRequest", "JobNotFound", "JobRequest", "JobView", "cancel_job", "get_job",
    "list_dead_letters", "list_jobs", "parse_job_request", "retry_dead_letter", "retry_job",
    "submit_job",
]


def check_submittable(
    session: Session, settings: Settings, *, pacs: str, policy: str, destination: str | None
) -> None:
    """Refuse at submission what would only fail later: unknown node or policy."""
    for name, role in ((pacs, "pacs"), (destination, "destination")):
        if name is not None and not _node_exists(session, name):
            raise InvalidJobRequest(f"{role}: no PACS node named {name!r} is configured")
    if policy_check.stamped(settings, policy):  # loaded before, unchanged since
        return
    # the engine's policy loader, loaded only when a job is submitted: the API process needs
    # the de-identification engine for nothing else
    from workers.deid.policy import load_policy

    try:
        load_policy(policy)
    except (DeidgateError, FileNotFoundError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, DeidgateError) else type(exc).__name__
        raise InvalidJobRequest(f"policy: {policy!r} cannot be loaded ({reason})") from None
    policy_check.remember(settings, policy)


def _node_exists(session: Session, name: str) -> bool:
    try:
        admin.get_node(session, name)
    except admin.UnknownNode:
        return False
    return True


def _audit(session: Session, keys: SiteKeys, kind: str, *, actor: str, details: dict) -> None:
    AuditStore(session, keys).log_event(kind, actor=actor, details=details)


def submit_job(
    session: Session, settings: Settings, keys: SiteKeys, req: JobRequest, *, actor: str
) -> JobView:
    policy = req.policy or settings.default_policy
    check_submittable(session, settings, pacs=req.pacs, policy=policy,
                      destination=req.destination)
    job = Job(
        id=new_job_id(), state=JobState.QUEUED, pacs=req.pacs, policy=policy,
        destination=req.destination, selector=req.selector, requested=req.requested,
        modalities=",".join(req.modalities) if req.modalities else None,
        request_sealed=b"", actor=actor, attempts=0,
    )
    job.request_sealed = seal(keys, req.model_dump(mode="json"), aad=f"job:{job.id}")
    session.add(job)
    _audit(session, keys, "job.submitted", actor=actor, details={
        "job": job.id, "pacs": req.pacs, "selector": req.selector, "requested": req.requested,
        "policy": policy, "destination": req.destination, "modalities": req.modalities,
    })
    session.commit()
    log.info("job %s submitted: %s x%d from %s", job.id, req.selector, req.requested, req.pacs)
    enqueue(settings, TaskName.RESOLVE_JOB, job.id)
    return _view(session, job)


def list_jobs(
    session: Session, *, state: JobState | None = None, limit: int = 50, offset: int = 0
) -> list[JobView]:
    q = select(Job).order_by(Job.created_at.desc(), Job.id).limit(max(1, min(limit, 500)))
    q = q.offset(max(0, offset))
    if state is not None:
        q = q.where(Job.state == state)
    jobs = list(session.scalars(q))
    return [_view(session, j, detail=False) for j in jobs]


def get_job(session: Session, job_id: str) -> JobView | None:
    job = session.get(Job, job_id)
    return None if job is None else _view(session, job)


def job_state(session: Session, job_id: str) -> JobState | None:
    """The job's state alone (one indexed read): for pollers, None for an unknown job."""
    value = session.scalar(select(Job.state).where(Job.id == job_id))
    return None if value is None else JobState(value)


def _load(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise JobNotFound(f"no job with id {job_id!r}")
    return job


# The states each operation moves a job from. The move is one conditional UPDATE whose WHERE
# names them, and its rowcount decides: a read followed by a write would let a job that
# finished (or was retried by someone else) in between be overwritten.
CANCELLABLE = tuple(s for s in JobState if s not in TERMINAL_JOB_STATES)  # every active one
RETRYABLE = TERMINAL_JOB_STATES  # failed, cancelled, done


def _moved(session: Session, stmt: Any) -> int:
    """Rows a conditional UPDATE changed (RETURNING-free, so the same on both dialects)."""
    result: CursorResult[Any] = session.execute(stmt)  # type: ignore[assignment]
    return int(result.rowcount)


def cancel_job(
    session: Session, job_id: str, *, actor: str, keys: SiteKeys | None = None
) -> JobView:
    """Stop resolving and retrieving. Instances already received are still de-identified, so no
    identified copy is left behind in the spool."""
    moved = _moved(session, conditional_update(Job).where(
        Job.id == job_id, Job.state.in_(CANCELLABLE)).values(
        state=JobState.CANCELLED, reason=f"cancelled by {actor}", finished_at=utcnow()))
    if moved != 1:
        session.rollback()
        job = _load(session, job_id)
        raise InvalidJobRequest(f"job {job_id} is already {job.state}")
    session.execute(conditional_update(JobStudy).where(
        JobStudy.job_id == job_id,
        JobStudy.state.in_((StudyState.PENDING, StudyState.RETRIEVING)),
    ).values(state=StudyState.CANCELLED, reason="job cancelled"))
    if keys is not None:
        _audit(session, keys, "job.cancelled", actor=actor, details={"job": job_id})
    session.commit()
    return _view(session, _load(session, job_id))


def retry_job(
    session: Session, job_id: str, *, actor: str, settings: Settings | None = None,
    keys: SiteKeys | None = None,
) -> JobView:
    """Re-run the failed parts: failed studies are retrieved again, dead-lettered and failed
    instances de-identified again; a job that failed before resolving is resolved again.

    The job row moves first, only from the state read (compare and set), so of two retries at
    once exactly one proceeds; studies and instances then move only from their failed states,
    and only those that moved are enqueued."""
    job = _load(session, job_id)
    seen = job.state
    if seen not in RETRYABLE:
        raise InvalidJobRequest(f"job {job_id} is {seen}; only finished jobs can be retried")
    n_studies = session.scalar(select(func.count()).select_from(JobStudy)
                               .where(JobStudy.job_id == job_id)) or 0
    new_state = JobState.QUEUED if n_studies == 0 else JobState.RETRIEVING
    moved = _moved(session, conditional_update(Job).where(Job.id == job_id, Job.state == seen)
                   .values(state=new_state, reason=None, finished_at=None,
                           attempts=Job.attempts + 1))
    if moved != 1:  # moved by someone else since the read
        session.rollback()
        now = _load(session, job_id).state
        raise InvalidJobRequest(f"job {job_id} is {now} (it was {seen} a moment ago); "
                                "only finished jobs can be retried")
    redo_studies = list(session.scalars(conditional_update(JobStudy).where(
        JobStudy.job_id == job_id,
        JobStudy.state.in_((StudyState.FAILED, StudyState.CANCELLED)),
    ).values(state=StudyState.PENDING, reason=None, retrieved=False, attempts=0)
        .returning(JobStudy.id)))
    redo_inst = list(session.scalars(conditional_update(JobInstance).where(
        JobInstance.job_id == job_id,
        JobInstance.state.in_((InstanceState.FAILED, InstanceState.DEAD_LETTERED)),
    ).values(state=InstanceState.PENDING, reason=None, attempts=0, claimed_at=None)
        .returning(JobInstance.id)))
    if n_studies and not redo_studies and not redo_inst and seen == JobState.DONE:
        session.rollback()
        raise InvalidJobRequest(f"job {job_id} has nothing to retry")
    session.execute(conditional_update(DeadLetter)
                    .where(DeadLetter.job_id == job_id, DeadLetter.state == DeadLetterState.DEAD)
                    .values(state=DeadLetterState.RETRIED, retried_at=utcnow()))
    if keys is not None:
        _audit(session, keys, "job.retried", actor=actor, details={
            "job": job_id, "studies": len(redo_studies), "instances": len(redo_inst)})
    session.commit()
    if settings is not None:
        if new_state == JobState.QUEUED:
            enqueue(settings, TaskName.RESOLVE_JOB, job_id)
        for sid in redo_studies:
            enqueue(settings, TaskName.RETRIEVE_STUDY, sid)
        # on the node holding each file, not the retrier's
        enqueue_deidentify(settings, instance_nodes(session, redo_inst))
        if not redo_studies and not redo_inst and new_state != JobState.QUEUED:
            enqueue(settings, TaskName.SWEEP)
    return _view(session, _load(session, job_id))


def list_dead_letters(session: Session, *, job_id: str | None = None) -> list[DeadLetterView]:
    q = select(DeadLetter).order_by(DeadLetter.id)
    if job_id is not None:
        q = q.where(DeadLetter.job_id == job_id)
    return [_dl_view(d) for d in session.scalars(q)]


def retry_dead_letter(
    session: Session, settings: Settings, dead_letter_id: int, *, actor: str
) -> DeadLetterView:
    dl = session.get(DeadLetter, dead_letter_id)
    if dl is None:
        raise JobNotFound(f"no dead-lettered task with id {dead_letter_id}")
    # dead -> retried as one conditional UPDATE first: of two operators at once, one revives
    moved = _moved(session, conditional_update(DeadLetter).where(
        DeadLetter.id == dead_letter_id, DeadLetter.state == DeadLetterState.DEAD
    ).values(state=DeadLetterState.RETRIED, retried_at=utcnow()))
    if moved != 1:
        session.rollback()
        raise InvalidJobRequest(f"dead-lettered task {dead_letter_id} was already retried")
    revive(session, dl)
    session.commit()
    session.refresh(dl)
    task = TaskName(dl.task)
    node = WORK[task].node(session, dl.target) if TASKS[task].on_node else None
    enqueue(settings, task, dl.target,
            node=node or (node_name(settings) if TASKS[task].on_node else None))
    log.info("dead letter %d (%s) retried by %s", dl.id, dl.task, actor)
    return _dl_view(dl)


# --- views --------------------------------------------------------------------------------------

def _dl_view(d: DeadLetter) -> DeadLetterView:
    return DeadLetterView(id=d.id, task=d.task, reason=d.reason, attempts=d.attempts,
                          state=d.state, created_at=d.created_at)


def study_counts(session: Session, job_id: str) -> dict[int | None, dict[InstanceState, int]]:
    """Per-study instance counts by state, computed (not counted up) so no update races."""
    rows = session.execute(
        select(JobInstance.study_id, JobInstance.state, func.count())
        .where(JobInstance.job_id == job_id)
        .group_by(JobInstance.study_id, JobInstance.state)
    )
    out: dict[int | None, dict[InstanceState, int]] = {}
    for sid, st, n in rows:
        out.setdefault(sid, {})[st] = n
    return out


def _view(session: Session, job: Job, *, detail: bool = True) -> JobView:
    studies = list(session.scalars(
        select(JobStudy).where(JobStudy.job_id == job.id).order_by(JobStudy.idx)))
    per = study_counts(session, job.id)
    counts = Counts(studies_found=len(studies))
    uids = [s.pseudo_uid for s in studies if s.pseudo_uid]
    scored = set(session.scalars(select(ScoreResult.exam).where(ScoreResult.exam.in_(uids)))) \
        if uids else set()
    views: list[StudyView] = []
    for s in studies:
        c = per.get(s.id, {})
        sv = StudyView(
            index=s.idx, study_uid=s.pseudo_uid, state=s.state, expected=s.expected,
            received=sum(c.values()), deidentified=c.get(InstanceState.WRITTEN, 0),
            refused=c.get(InstanceState.REFUSED, 0),
            failed=c.get(InstanceState.FAILED, 0) + c.get(InstanceState.DEAD_LETTERED, 0),
            forwarded=s.forwarded, scored=s.pseudo_uid in scored, reason=s.reason,
            skipped=s.skipped or 0, skipped_reason=s.skipped_reason,
        )
        views.append(sv)
        counts.instances_expected += s.expected or 0
        counts.instances_received += sv.received
        counts.instances_deidentified += sv.deidentified
        counts.instances_refused += sv.refused
        counts.instances_failed += sv.failed
        counts.instances_skipped += sv.skipped
        counts.studies_complete += s.state == StudyState.COMPLETE
        counts.studies_failed += s.state == StudyState.FAILED
        counts.studies_scored += sv.scored
    dls = list(session.scalars(select(DeadLetter).where(DeadLetter.job_id == job.id)
                               .order_by(DeadLetter.id)))
    counts.dead_letters = sum(1 for d in dls if d.state == DeadLetterState.DEAD)
    data: dict[str, Any] = {
        "id": job.id, "state": job.state, "pacs": job.pacs, "policy": job.policy,
        "destination": job.destination, "selector": job.selector, "requested": job.requested,
        "modalities": job.modalities.split(",") if job.modalities else None,
        "created_at": job.created_at, "updated_at": job.updated_at,
        "finished_at": job.finished_at, "reason": job.reason, "counts": counts,
        "studies": views if detail else [],
        "dead_letters": [_dl_view(d) for d in dls] if detail else [],
    }
    return JobView(**data)
