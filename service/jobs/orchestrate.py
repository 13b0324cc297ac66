"""The job state machine, in the database: every transition is a conditional UPDATE.

Workers, the listener hook and the API all move jobs through these functions. A transition only
happens from the states it names, so a duplicated or redelivered task finds nothing to do (that
is what makes tasks idempotent), and the sweep can re-enqueue anything unfinished without
creating duplicates. Nothing here touches DICOM or the broker directly, except ``enqueue``.
"""

from __future__ import annotations

import logging
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.core.config import Settings
from service.core.errors import DeidgateError
from service.core.keys import SiteKeys
from service.db.base import utcnow
from service.db.models.dicom import ReceivedInstance
from service.db.models.jobs import (
    TERMINAL_JOB_STATES,
    DeadLetter,
    Job,
    JobInstance,
    JobStudy,
)
from service.jobs.schemas import InvalidJobRequest, study_key

log = logging.getLogger(__name__)

ACTIVE_STUDY = ("pending", "retrieving", "de-identifying")
TERMINAL_INSTANCE = ("written", "refused", "failed", "dead-lettered")


def upd(model: Any) -> Any:
    """A conditional UPDATE; the rows are re-read afterwards, so no in-session evaluation."""
    return update(model).execution_options(synchronize_session=False)


def new_job_id() -> str:
    return uuid.uuid4().hex


def node_name(settings: Settings) -> str:
    return settings.node_name or socket.gethostname().split(".")[0] or "local"


def deid_queue(settings: Settings, node: str | None = None) -> str:
    """De-identification runs on the host whose spool holds the identified file."""
    return f"deid.{node or node_name(settings)}"


def enqueue(settings: Settings, task: str, *args: Any, queue: str = "default") -> bool:
    """Publish a task; a broker failure is logged, not raised: the sweep will enqueue it later."""
    from workers.celery_app import celery_for

    try:
        celery_for(settings).send_task(task, args=list(args), queue=queue)
        return True
    except Exception as exc:
        log.warning("could not enqueue %s (%s); the sweep will retry", task, type(exc).__name__)
        return False


def enqueue_target(settings: Settings, task: str, target: str) -> None:
    if task == "deidgate.deidentify_instance":
        enqueue(settings, task, int(target), queue=deid_queue(settings))
    elif task == "deidgate.retrieve_study":
        enqueue(settings, task, int(target))
    else:
        enqueue(settings, task, target)


def audit(session: Session, keys: SiteKeys, kind: str, *, actor: str, details: dict) -> None:
    """Hash-chained audit event when the audit store is installed; a log line otherwise."""
    try:
        from service.audit.store import AuditStore
    except ImportError:
        log.info("audit %s by %s: %s", kind, actor, details)
        return
    AuditStore(session, keys).log_event(kind, actor=actor, details=details)


def check_submittable(
    session: Session, settings: Settings, *, pacs: str, policy: str, destination: str | None
) -> None:
    """Refuse at submission what would only fail later: unknown node or policy."""
    for name, role in ((pacs, "pacs"), (destination, "destination")):
        if name is not None and node_exists(session, name) is False:
            raise InvalidJobRequest(f"{role}: no PACS node named {name!r} is configured")
    try:
        from workers.deid.policy import load_policy
    except ImportError:
        return
    try:
        load_policy(policy)
    except (DeidgateError, FileNotFoundError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, DeidgateError) else type(exc).__name__
        raise InvalidJobRequest(f"policy: {policy!r} cannot be loaded ({reason})") from None


def node_exists(session: Session, name: str) -> bool:
    from service.dicom import admin

    try:
        admin.get_node(session, name)
    except admin.UnknownNode:
        return False
    return True


# --- resolve -------------------------------------------------------------------------------------

def claim_job(session: Session, job_id: str, stale_s: int) -> Job | None:
    """queued -> resolving (or a resolving job whose worker died)."""
    stale = utcnow() - timedelta(seconds=stale_s)
    res = session.execute(upd(Job).where(
        Job.id == job_id,
        or_(Job.state == "queued", and_(Job.state == "resolving", Job.updated_at < stale)),
    ).values(state="resolving", attempts=Job.attempts + 1, updated_at=utcnow()))
    session.commit()
    return session.get(Job, job_id, populate_existing=True) if res.rowcount == 1 else None  # type: ignore[attr-defined]


@dataclass
class FoundStudy:
    study_uid: str
    expected: int | None


def add_studies(
    session: Session, keys: SiteKeys, job_id: str, found: list[FoundStudy]
) -> list[int]:
    """Record what C-FIND found, once (a second resolve of the same job adds nothing)."""
    from service.jobs.schemas import seal

    have = session.scalar(select(func.count()).select_from(JobStudy)
                          .where(JobStudy.job_id == job_id)) or 0
    if not have:
        for i, f in enumerate(found):
            session.add(JobStudy(
                job_id=job_id, idx=i, study_key=study_key(keys, f.study_uid),
                uid_sealed=seal(keys, f.study_uid, aad=f"study:{job_id}:{i}"),
                state="pending", expected=f.expected, retrieved=False, attempts=0,
                forwarded=False,
            ))
    if not found and not have:
        session.execute(upd(Job).where(Job.id == job_id, Job.state == "resolving").values(
            state="failed", reason="no-studies: the PACS returned no matching study",
            finished_at=utcnow()))
    else:
        session.execute(upd(Job).where(Job.id == job_id, Job.state == "resolving")
                        .values(state="retrieving"))
    session.commit()
    return list(session.scalars(select(JobStudy.id).where(
        JobStudy.job_id == job_id, JobStudy.state == "pending").order_by(JobStudy.idx)))


def fail_job(session: Session, job_id: str, reason: str) -> None:
    session.execute(upd(Job).where(Job.id == job_id, Job.state.not_in(TERMINAL_JOB_STATES))
                    .values(state="failed", reason=reason, finished_at=utcnow()))
    session.commit()


# --- retrieve ------------------------------------------------------------------------------------

def claim_study(session: Session, study_id: int, stale_s: int) -> JobStudy | None:
    stale = utcnow() - timedelta(seconds=stale_s)
    active_job = select(Job.id).where(Job.state.not_in(TERMINAL_JOB_STATES)).scalar_subquery()
    res = session.execute(upd(JobStudy).where(
        JobStudy.id == study_id,
        JobStudy.job_id.in_(active_job),
        or_(JobStudy.state == "pending",
            and_(JobStudy.state == "retrieving", JobStudy.updated_at < stale)),
    ).values(state="retrieving", attempts=JobStudy.attempts + 1, updated_at=utcnow()))
    session.commit()
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(JobStudy, study_id, populate_existing=True)


def retrieval_finished(
    session: Session, study_id: int, *, complete: bool, reason: str | None,
    expected: int | None = None,
) -> None:
    values: dict[str, Any] = {"retrieved": True}
    if expected is not None:
        values["expected"] = expected
    if complete:
        values["state"] = "de-identifying"
    else:
        values.update(state="failed", reason=reason or "retrieval incomplete")
    session.execute(upd(JobStudy).where(JobStudy.id == study_id,
                                           JobStudy.state == "retrieving").values(**values))
    session.commit()


def release_study(session: Session, study_id: int) -> None:
    """Give a study back for another attempt (after a transient failure of the move)."""
    session.execute(upd(JobStudy).where(JobStudy.id == study_id,
                                           JobStudy.state == "retrieving")
                    .values(state="pending"))
    session.commit()


# --- instances -----------------------------------------------------------------------------------

def _active_study(session: Session, key: str) -> JobStudy | None:
    return session.scalars(
        select(JobStudy).join(Job, Job.id == JobStudy.job_id)
        .where(JobStudy.study_key == key, JobStudy.state.in_(ACTIVE_STUDY),
               Job.state.not_in(TERMINAL_JOB_STATES))
        .order_by(Job.created_at.desc()).limit(1)
    ).first()


def link_received(
    session: Session, received_id: int, *, node: str, study: JobStudy | None = None
) -> tuple[JobInstance | None, bool]:
    """Attach an instance the listener stored to the active job study it belongs to (matched by
    the keyed study-UID hash the listener recorded).

    Returns the row and whether it needs de-identifying (False for a duplicate delivery).
    Instances no job asked for are still de-identified (job_id None): identified data is never
    left lying in the spool.
    """
    ri = session.get(ReceivedInstance, received_id)
    if ri is None:
        return None, False
    study = study or _active_study(session, ri.study_key)
    job_id = study.job_id if study else None
    key = str(ri.id)
    q = select(JobInstance).where(JobInstance.received_key == key)
    q = q.where(JobInstance.job_id == job_id) if job_id else q.where(JobInstance.job_id.is_(None))
    existing = session.scalars(q).first()
    if existing is not None:
        return existing, existing.state == "pending"
    # the same file already handled for another job: share its outcome, do not redo it
    done = session.scalars(select(JobInstance).where(
        JobInstance.received_key == key, JobInstance.state.in_(("written", "refused")))).first()
    row = JobInstance(received_key=key, job_id=job_id, study_id=study.id if study else None,
                      spool_path=ri.spool_path, node=node, state="pending", attempts=0)
    if done is not None:
        row.state, row.out_path, row.reason = done.state, done.out_path, done.reason
    session.add(row)
    if job_id and ri.job_id is None:
        ri.job_id = job_id
    if ri.status == "received":
        ri.status = "queued"
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return session.scalars(q).first(), False
    return row, row.state == "pending"


def adopt_known(session: Session, study_id: int, *, node: str) -> list[int]:
    """After a retrieval, attach instances of the study the listener already held (it does not
    spool a duplicate SOP instance twice, so a re-requested study may arrive as nothing)."""
    st = session.get(JobStudy, study_id)
    if st is None:
        return []
    linked = set(session.scalars(select(JobInstance.received_key)
                                 .where(JobInstance.study_id == study_id)))
    todo: list[int] = []
    for rid in list(session.scalars(select(ReceivedInstance.id).where(
            ReceivedInstance.study_key == st.study_key).order_by(ReceivedInstance.id))):
        if str(rid) in linked:
            continue
        row, needs = link_received(session, rid, node=node, study=st)
        if row is not None and needs:
            todo.append(row.id)
    return todo


def claim_instance(session: Session, instance_id: int, stale_s: int) -> JobInstance | None:
    """pending -> processing, or take over a stale claim (its worker died); one winner only."""
    now = utcnow()
    stale = now - timedelta(seconds=stale_s)
    res = session.execute(upd(JobInstance).where(
        JobInstance.id == instance_id,
        or_(JobInstance.state == "pending",
            and_(JobInstance.state.in_(("processing", "written", "refused")),
                 JobInstance.claimed_at < stale)),
    ).values(state="processing", claimed_at=now, attempts=JobInstance.attempts + 1))
    session.commit()
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(JobInstance, instance_id, populate_existing=True)


def finish_instance(
    session: Session, instance_id: int, *, state: str, out_path: str | None = None,
    reason: str | None = None, pseudo_study_uid: str | None = None,
) -> int | None:
    """Record the outcome; returns the study id so the caller can check the study."""
    session.execute(upd(JobInstance).where(JobInstance.id == instance_id).values(
        state=state, out_path=out_path, reason=reason, claimed_at=None))
    row = session.get(JobInstance, instance_id, populate_existing=True)
    sid = row.study_id if row else None
    if sid is not None and pseudo_study_uid:
        session.execute(upd(JobStudy).where(JobStudy.id == sid,
                                               JobStudy.pseudo_uid.is_(None))
                        .values(pseudo_uid=pseudo_study_uid))
    session.commit()
    return sid


def release_instance(session: Session, instance_id: int) -> None:
    session.execute(upd(JobInstance).where(JobInstance.id == instance_id,
                                              JobInstance.state == "processing")
                    .values(state="pending", claimed_at=None))
    session.commit()


def check_study(session: Session, study_id: int) -> bool:
    """de-identifying -> complete/failed once every received instance is done; True on the
    transition (exactly one caller sees True, so the completion hook runs once)."""
    s = session.get(JobStudy, study_id, populate_existing=True)
    if s is None or s.state != "de-identifying" or not s.retrieved:
        return False
    counts = dict(session.execute(
        select(JobInstance.state, func.count()).where(JobInstance.study_id == study_id)
        .group_by(JobInstance.state)).all())
    if any(st not in TERMINAL_INSTANCE for st in counts):
        return False
    bad = counts.get("failed", 0) + counts.get("dead-lettered", 0)
    received = sum(counts.values())
    if bad:
        new, reason = "failed", f"{bad} instance(s) could not be de-identified"
    elif s.expected is not None and received < s.expected:
        new, reason = "failed", f"received {received} of {s.expected} instances"
    else:
        new, reason = "complete", None
    res = session.execute(upd(JobStudy).where(JobStudy.id == study_id,
                                                 JobStudy.state == "de-identifying")
                          .values(state=new, reason=reason))
    session.commit()
    return res.rowcount == 1 and new == "complete"  # type: ignore[attr-defined]


def refresh_job(session: Session, job_id: str) -> str | None:
    """Derive the job's state from its studies; terminal states are never left by this."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.state in TERMINAL_JOB_STATES or job.state in ("queued", "resolving"):
        return job.state if job else None
    states = list(session.scalars(select(JobStudy.state).where(JobStudy.job_id == job_id)))
    values: dict[str, Any]
    if any(s in ("pending", "retrieving") for s in states):
        values = {"state": "retrieving"}
    elif any(s == "de-identifying" for s in states):
        values = {"state": "de-identifying"}
    elif any(s == "scoring" for s in states):
        values = {"state": "scoring"}
    else:
        failed = [(s.idx, s.reason) for s in session.scalars(
            select(JobStudy).where(JobStudy.job_id == job_id, JobStudy.state == "failed")
            .order_by(JobStudy.idx))]
        if failed:
            detail = "; ".join(f"study {i}: {r}" for i, r in failed[:10])
            values = {"state": "failed", "finished_at": utcnow(),
                      "reason": f"{len(failed)} of {len(states)} studies failed ({detail})"}
        else:
            values = {"state": "done", "finished_at": utcnow(), "reason": None}
    if values["state"] != job.state:
        session.execute(upd(Job).where(Job.id == job_id,
                                          Job.state.not_in(TERMINAL_JOB_STATES)).values(**values))
        session.commit()
    return values["state"]


# --- dead letters and the sweep ------------------------------------------------------------------

def dead_letter(
    session: Session, *, task: str, target: str, reason: str, attempts: int
) -> None:
    """Record a task that kept failing and mark the work it was doing accordingly."""
    job_id: str | None = None
    if task == "deidgate.deidentify_instance":
        ji = session.get(JobInstance, int(target))
        if ji is not None:
            job_id = ji.job_id
            ji.state, ji.reason, ji.claimed_at = "dead-lettered", reason, None
    elif task == "deidgate.retrieve_study":
        st = session.get(JobStudy, int(target))
        if st is not None:
            job_id = st.job_id
            st.state, st.reason = "failed", f"dead-lettered: {reason}"
    elif task == "deidgate.resolve_job":
        job_id = target
        session.execute(upd(Job).where(Job.id == target,
                                          Job.state.not_in(TERMINAL_JOB_STATES))
                        .values(state="failed", reason=f"dead-lettered: {reason}",
                                finished_at=utcnow()))
    session.add(DeadLetter(task=task, target=target, job_id=job_id, reason=reason,
                           attempts=attempts, state="dead"))
    session.commit()


def revive(session: Session, dl: DeadLetter) -> None:
    """Put the dead-lettered work back to its start state (the caller commits and enqueues)."""
    if dl.task == "deidgate.deidentify_instance":
        session.execute(upd(JobInstance).where(JobInstance.id == int(dl.target)).values(
            state="pending", reason=None, claimed_at=None, attempts=0))
    elif dl.task == "deidgate.retrieve_study":
        session.execute(upd(JobStudy).where(JobStudy.id == int(dl.target)).values(
            state="pending", reason=None, retrieved=False, attempts=0))
    elif dl.task == "deidgate.resolve_job":
        session.execute(upd(Job).where(Job.id == dl.target).values(
            state="queued", reason=None, finished_at=None))
    if dl.job_id:
        session.execute(upd(Job).where(Job.id == dl.job_id, Job.state == "failed")
                        .values(state="retrieving", reason=None, finished_at=None))


@dataclass
class SweepResult:
    jobs: list[str]
    studies: list[int]
    instances: list[tuple[int, str]]
    unlinked: list[int]
    completed: list[tuple[int, str]]  # (study, job) completed by the sweep's own check


def sweep(session: Session, *, stale_s: int, startup: bool = False) -> SweepResult:
    """Find unfinished work whose task may have been lost (worker killed, broker restarted).

    Stale means untouched for ``stale_s`` seconds. A stale claim (its worker presumed dead) goes
    back to its start state; every row picked is touched, so the next sweep leaves it alone for
    another ``stale_s`` while its new message waits in the queue (no flood of duplicates under
    a backlog). At a worker's start-up every pending row is picked: messages may have been lost
    with the broker; claims make any duplicate harmless.
    """
    now = utcnow()
    stale = now - timedelta(seconds=stale_s)
    fresh_ok = now + timedelta(days=1) if startup else stale
    move_stale = stale - timedelta(seconds=3 * stale_s)  # a C-MOVE legitimately takes a while
    # claims whose holder is presumed dead go back to their start state
    session.execute(upd(Job).where(Job.state == "resolving", Job.updated_at < stale)
                    .values(state="queued", updated_at=stale - timedelta(seconds=1)))
    session.execute(upd(JobStudy).where(JobStudy.state == "retrieving",
                                        JobStudy.updated_at < move_stale)
                    .values(state="pending", updated_at=stale - timedelta(seconds=1)))
    session.execute(upd(JobInstance).where(JobInstance.state == "processing",
                                           JobInstance.claimed_at < stale)
                    .values(state="pending", claimed_at=None,
                            updated_at=stale - timedelta(seconds=1)))
    session.commit()
    jobs = list(session.scalars(select(Job.id).where(Job.state == "queued",
                                                     Job.updated_at < fresh_ok)))
    active = select(Job.id).where(Job.state.not_in(TERMINAL_JOB_STATES)).scalar_subquery()
    studies = list(session.scalars(select(JobStudy.id).where(
        JobStudy.job_id.in_(active), JobStudy.state == "pending",
        JobStudy.updated_at < fresh_ok).order_by(JobStudy.id)))
    instances = [(i, n) for i, n in session.execute(
        select(JobInstance.id, JobInstance.node).where(or_(
            and_(JobInstance.state == "pending", JobInstance.updated_at < fresh_ok),
            # committed, but the identified source may not have been removed yet
            and_(JobInstance.state.in_(("written", "refused")),
                 JobInstance.claimed_at < stale, JobInstance.updated_at < stale),
        )).order_by(JobInstance.id))]
    unlinked = list(session.scalars(select(ReceivedInstance.id).where(
        ReceivedInstance.status == "received", ReceivedInstance.received_at < fresh_ok,
    ).order_by(ReceivedInstance.id)))
    if jobs:
        session.execute(upd(Job).where(Job.id.in_(jobs)).values(updated_at=now))
    if studies:
        session.execute(upd(JobStudy).where(JobStudy.id.in_(studies)).values(updated_at=now))
    if instances:
        session.execute(upd(JobInstance).where(JobInstance.id.in_([i for i, _ in instances]))
                        .values(updated_at=now))
    session.commit()
    # studies whose last instance finished while the completion check was lost
    completed = []
    for sid, jid in list(session.execute(select(JobStudy.id, JobStudy.job_id).where(
            JobStudy.state == "de-identifying", JobStudy.retrieved.is_(True)))):
        if check_study(session, sid):
            completed.append((sid, jid))
    for jid in list(session.scalars(select(Job.id).where(
            Job.state.in_(("retrieving", "de-identifying", "scoring"))))):
        refresh_job(session, jid)
    return SweepResult(jobs=jobs, studies=studies, instances=instances, unlinked=unlinked,
                       completed=completed)
