"""What follows the last instance of a study: the study's completion check, then (exactly once)
everything downstream of a fully de-identified study: forwarding and scoring."""

from __future__ import annotations

import logging
from functools import partial

from service.core.config import Settings
from service.core.queues import TaskName, node_name
from service.db.models.jobs import Job, JobStudy
from service.db.session import get_sessionmaker, session_scope
from service.db.states import StudyState
from service.jobs.routing import enqueue
from service.jobs.transitions import check_study, refresh_job

log = logging.getLogger(__name__)


def scoring_enabled(settings: Settings) -> bool:
    """A model is configured (``settings.score_model`` or the registry's active model)."""
    from workers.score.registry import active_folder  # no torch: reads the registry file

    try:
        return active_folder(settings) is not None
    except Exception as exc:  # an unreadable registry must not stop de-identification
        log.warning("model registry unreadable (%s); not scoring", type(exc).__name__)
        return False


def after_instance(settings: Settings, study_id: int, job_id: str) -> None:
    """Check the study (one caller sees it complete) and derive the job's state again."""
    sessions = get_sessionmaker(settings.db_url)
    with sessions() as s:
        # asked only when the study completes, not on every instance's check
        completed = check_study(s, study_id, score=partial(scoring_enabled, settings))
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
    """Queue the study's score task when it is waiting in ``scoring`` (``check_study`` put it
    there because a model is configured); False when it is not (no model: no score, none faked).
    A lost publish is re-sent by the sweep (studies in ``scoring``)."""
    with session_scope(settings.db_url) as s:
        st = s.get(JobStudy, study_id)
        waiting = st is not None and st.state == StudyState.SCORING
    if not waiting:
        return False
    return enqueue(settings, TaskName.SCORE_STUDY, study_id)
