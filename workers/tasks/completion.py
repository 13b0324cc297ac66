"""What follows the last instance of a study: the study's completion check, then (exactly once)
everything downstream of a fully de-identified study: forwarding and scoring."""

from __future__ import annotations

from service.core.config import Settings
from service.core.queues import TaskName, node_name
from service.db.models.jobs import Job
from service.db.session import get_sessionmaker, session_scope
from service.jobs.routing import enqueue
from service.jobs.transitions import check_study, refresh_job


def after_instance(settings: Settings, study_id: int, job_id: str) -> None:
    """Check the study (one caller sees it complete) and derive the job's state again."""
    sessions = get_sessionmaker(settings.db_url)
    with sessions() as s:
        completed = check_study(s, study_id)
    if completed:
        study_complete(settings, study_id, job_id)
    with sessions() as s:
        refresh_job(s, job_id)


def study_complete(settings: Settings, study_id: int, job_id: str) -> None:
    """Everything downstream of a fully de-identified study starts here (exactly once)."""
    with session_scope(settings.db_url) as s:
        job = s.get(Job, job_id)
        dest = job.destination if job else None
    if dest:
        # the output store it sends from is this host's (the last instance was written here)
        enqueue(settings, TaskName.FORWARD_STUDY, study_id, node=node_name(settings))
    enqueue_scoring(settings, study_id)


def enqueue_scoring(settings: Settings, study_id: int) -> bool:
    """SCORING HOOK: the scoring issue enqueues the study on the "score" queue here (and moves
    the study/job through the "scoring" state). Until then no score exists, and none is faked."""
    return False
