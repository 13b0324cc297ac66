"""When work is lost or keeps failing: dead letters (and their revival), and the sweep.

A task that exhausts its retries is dead-lettered: a ``DeadLetter`` row with its PHI-free reason,
and the row it worked on is marked so the job ends ``failed`` and can be retried. What that means
for each task is written once, in ``WORK`` (keyed by the task's name). The sweep finds what the
database says is unfinished (a killed worker, a restarted broker) for the caller to re-enqueue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from service.core.queues import TaskName
from service.db.base import utcnow
from service.db.models.dicom import ReceivedInstance
from service.db.models.jobs import DeadLetter, Job, JobInstance, JobStudy
from service.db.models.triage import ScoreResult
from service.db.states import (
    COMMITTED_INSTANCE_STATES,
    RUNNING_JOB_STATES,
    TERMINAL_JOB_STATES,
    DeadLetterState,
    InstanceState,
    JobState,
    ReceivedStatus,
    StudyState,
)
from service.jobs.transitions import check_study, conditional_update, refresh_job

# --- dead letters --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Work:
    """What dead-lettering and reviving one task means for the row its target names."""

    mark_dead: Callable[[Session, str, str], str | None]  # (target, reason) -> its job id
    revive: Callable[[Session, str], None]  # back to the state the task starts from
    # node-bound work: the host holding the target's files (None: the reviver's own host)
    node: Callable[[Session, str], str | None] = lambda session, target: None


def _instance_dead(session: Session, target: str, reason: str) -> str | None:
    ji = session.get(JobInstance, int(target))
    if ji is None:
        return None
    ji.state, ji.reason, ji.claimed_at = InstanceState.DEAD_LETTERED, reason, None
    return ji.job_id


def _instance_revive(session: Session, target: str) -> None:
    session.execute(conditional_update(JobInstance).where(JobInstance.id == int(target)).values(
        state=InstanceState.PENDING, reason=None, claimed_at=None, attempts=0))


def _instance_node(session: Session, target: str) -> str | None:
    return session.scalar(select(ReceivedInstance.node).join(
        JobInstance, JobInstance.received_id == ReceivedInstance.id).where(
        JobInstance.id == int(target)))


def _study_dead(session: Session, target: str, reason: str) -> str | None:
    st = session.get(JobStudy, int(target))
    if st is None:
        return None
    st.state, st.reason = StudyState.FAILED, f"dead-lettered: {reason}"
    return st.job_id


def _study_revive(session: Session, target: str) -> None:
    session.execute(conditional_update(JobStudy).where(JobStudy.id == int(target)).values(
        state=StudyState.PENDING, reason=None, retrieved=False, attempts=0))


def _job_dead(session: Session, target: str, reason: str) -> str | None:
    session.execute(conditional_update(Job).where(Job.id == target,
                                                  Job.state.not_in(TERMINAL_JOB_STATES))
                    .values(state=JobState.FAILED, reason=f"dead-lettered: {reason}",
                            finished_at=utcnow()))
    return target


def _job_revive(session: Session, target: str) -> None:
    session.execute(conditional_update(Job).where(Job.id == target).values(
        state=JobState.QUEUED, reason=None, finished_at=None))


def _nothing_dead(session: Session, target: str, reason: str) -> str | None:
    """Nothing to mark: the row it served is done (a forwarded study stays complete, its
    output exists; a sweep is only a search)."""
    return None


def _nothing_to_revive(session: Session, target: str) -> None:
    return None


def _score_dead(session: Session, target: str, reason: str) -> str | None:
    """Scoring kept failing: the de-identified study is still complete (its output exists);
    it says it was not scored, and the dead letter can send it to scoring again."""
    st = session.get(JobStudy, int(target))
    if st is None:
        return None
    if st.state == StudyState.SCORING:
        scored = st.pseudo_uid is not None and session.scalar(
            select(ScoreResult.id).where(ScoreResult.exam == st.pseudo_uid).limit(1)) is not None
        what = "scored, but the SR was not delivered" if scored else "not scored"
        st.state, st.reason = StudyState.COMPLETE, f"{what}: {reason}"[:500]
    return st.job_id


def _score_revive(session: Session, target: str) -> None:
    session.execute(conditional_update(JobStudy).where(
        JobStudy.id == int(target), JobStudy.state == StudyState.COMPLETE)
        .values(state=StudyState.SCORING, reason=None))


WORK: dict[TaskName, Work] = {
    TaskName.RESOLVE_JOB: Work(_job_dead, _job_revive),
    TaskName.RETRIEVE_STUDY: Work(_study_dead, _study_revive),
    TaskName.DEIDENTIFY_INSTANCE: Work(_instance_dead, _instance_revive, _instance_node),
    TaskName.FORWARD_STUDY: Work(_nothing_dead, _nothing_to_revive),  # forwarded stays False
    TaskName.SWEEP: Work(_nothing_dead, _nothing_to_revive),  # the next round sweeps again
    TaskName.SCORE_STUDY: Work(_score_dead, _score_revive),
}


def dead_letter(
    session: Session, *, task: TaskName, target: str, reason: str, attempts: int
) -> None:
    """Record a task that kept failing and mark the work it was doing accordingly."""
    job_id = WORK[task].mark_dead(session, target, reason)
    session.add(DeadLetter(task=str(task), target=target, job_id=job_id, reason=reason,
                           attempts=attempts, state=DeadLetterState.DEAD))
    session.commit()


def revive(session: Session, dl: DeadLetter) -> None:
    """Put the dead-lettered work back to its start state (the caller commits and enqueues)."""
    WORK[TaskName(dl.task)].revive(session, dl.target)
    if dl.job_id:
        session.execute(conditional_update(Job).where(Job.id == dl.job_id,
                                                      Job.state == JobState.FAILED)
                        .values(state=JobState.RETRIEVING, reason=None, finished_at=None))


# --- the sweep -----------------------------------------------------------------------------------

@dataclass
class SweepResult:
    jobs: list[str]
    studies: list[int]
    instances: list[tuple[int, str]]
    unlinked: list[int]
    completed: list[tuple[int, str]]  # (study, job) completed by the sweep's own check
    scoring: list[int] = field(default_factory=list)  # studies whose score task may be lost


def sweep(session: Session, *, stale_s: int, startup: bool = False,
          score: bool = False) -> SweepResult:
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
    touched = stale - timedelta(seconds=1)
    session.execute(conditional_update(Job)
                    .where(Job.state == JobState.RESOLVING, Job.updated_at < stale)
                    .values(state=JobState.QUEUED, updated_at=touched))
    session.execute(conditional_update(JobStudy)
                    .where(JobStudy.state == StudyState.RETRIEVING,
                           JobStudy.updated_at < move_stale)
                    .values(state=StudyState.PENDING, updated_at=touched))
    session.execute(conditional_update(JobInstance)
                    .where(JobInstance.state == InstanceState.PROCESSING,
                           JobInstance.claimed_at < stale)
                    .values(state=InstanceState.PENDING, claimed_at=None, updated_at=touched))
    session.commit()
    jobs = list(session.scalars(select(Job.id).where(Job.state == JobState.QUEUED,
                                                     Job.updated_at < fresh_ok)))
    active = select(Job.id).where(Job.state.not_in(TERMINAL_JOB_STATES)).scalar_subquery()
    studies = list(session.scalars(select(JobStudy.id).where(
        JobStudy.job_id.in_(active), JobStudy.state == StudyState.PENDING,
        JobStudy.updated_at < fresh_ok).order_by(JobStudy.id)))
    instances = [(i, n) for i, n in session.execute(  # n: the node holding the file
        select(JobInstance.id, ReceivedInstance.node)
        .join(ReceivedInstance, ReceivedInstance.id == JobInstance.received_id).where(or_(
            and_(JobInstance.state == InstanceState.PENDING, JobInstance.updated_at < fresh_ok),
            # committed, but the identified source may not have been removed yet
            and_(JobInstance.state.in_(COMMITTED_INSTANCE_STATES),
                 JobInstance.claimed_at < stale, JobInstance.updated_at < stale),
        )).order_by(JobInstance.id))]
    unlinked = list(session.scalars(select(ReceivedInstance.id).where(
        ReceivedInstance.status == ReceivedStatus.RECEIVED,
        ReceivedInstance.received_at < fresh_ok,
    ).order_by(ReceivedInstance.id)))
    if jobs:
        session.execute(conditional_update(Job).where(Job.id.in_(jobs)).values(updated_at=now))
    if studies:
        session.execute(conditional_update(JobStudy).where(JobStudy.id.in_(studies))
                        .values(updated_at=now))
    if instances:
        session.execute(conditional_update(JobInstance)
                        .where(JobInstance.id.in_([i for i, _ in instances]))
                        .values(updated_at=now))
    session.commit()
    # studies whose last instance finished while the completion check was lost
    completed = []
    for sid, jid in list(session.execute(select(JobStudy.id, JobStudy.job_id).where(
            JobStudy.state == StudyState.DEIDENTIFYING, JobStudy.retrieved.is_(True)))):
        if check_study(session, sid, score=score):
            completed.append((sid, jid))
    # studies waiting for a score whose message may be lost (the task touches the row when it
    # defers an incomplete exam, so a study inside its quiet period is not picked)
    scoring = list(session.scalars(select(JobStudy.id).where(
        JobStudy.state == StudyState.SCORING, JobStudy.updated_at < fresh_ok)
        .order_by(JobStudy.id)))
    if scoring:
        session.execute(conditional_update(JobStudy).where(JobStudy.id.in_(scoring))
                        .values(updated_at=now))
        session.commit()
    for jid in list(session.scalars(select(Job.id).where(Job.state.in_(RUNNING_JOB_STATES)))):
        refresh_job(session, jid)
    return SweepResult(jobs=jobs, studies=studies, instances=instances, unlinked=unlinked,
                       completed=completed, scoring=scoring)
