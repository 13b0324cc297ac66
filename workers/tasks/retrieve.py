"""retrieve_study: pull one study, one attempt per delivery.

An incomplete pull that may still succeed gives the study back and comes back after the
backoff through Celery's countdown (``retry_later``), so no worker slot waits asleep; each
claim of the study is one attempt (``JobStudy.attempts``), and the next asks the PACS only for
what is still missing. After the last attempt the study ends failed with the pull's reason.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from service.core.queues import TaskName
from service.db.models.jobs import Job, JobStudy
from service.db.session import get_sessionmaker, session_scope
from service.db.states import JobState, StudyState
from service.dicom.find import SeriesFilter
from service.dicom.sopclasses import MODALITY_OF
from service.jobs import pacs
from service.jobs.routing import enqueue_deidentify
from service.jobs.schemas import unseal
from service.jobs.transitions import (
    adopt_known,
    claim_study,
    release_study,
    retrieval_finished,
)
from workers.tasks.base import DeidgateTask, StudyTask
from workers.tasks.completion import after_instance


def series_filter(policy_name: str, modalities: str | None) -> SeriesFilter | None:
    """Which series a job's retrieval moves. The job's ``modalities`` option decides when
    given; otherwise the policy: a policy that accepts a list of SOP classes moves only the
    series of their modalities (MG for mammography-screening) and, where the PACS returns a
    series' SOP class, only accepted classes. A policy accepting any storage class: None
    (the whole study, as one C-MOVE)."""
    if modalities:
        return SeriesFilter(modalities=frozenset(modalities.split(",")),
                            source="job option modalities")
    from workers.deid.policy import load_policy

    sc = load_policy(policy_name).sop_classes
    refused = frozenset(r.uid for r in sc.refuse)
    if isinstance(sc.accept, str):
        return None
    accepted = frozenset(sc.accept)
    mods = {MODALITY_OF.get(uid) for uid in accepted}
    return SeriesFilter(
        modalities=None if None in mods else frozenset(m for m in mods if m is not None),
        sop_classes=accepted, refused_classes=refused, source=f"policy {policy_name}")


def _cancelled(db_url: str, study_id: int, job_id: str) -> bool:
    with get_sessionmaker(db_url)() as s:
        st = s.get(JobStudy, study_id, populate_existing=True)
        job = s.get(Job, job_id, populate_existing=True)
        return (st is None or st.state == StudyState.CANCELLED
                or job is None or job.state == JobState.CANCELLED)


class RetrieveTask(StudyTask):
    abstract = True

    def release(self, args: tuple[Any, ...]) -> None:
        with session_scope(self.settings.db_url) as s:
            release_study(s, int(args[0]))



@shared_task(bind=True, base=RetrieveTask, name=TaskName.RETRIEVE_STUDY.value)
def retrieve_study(self: DeidgateTask, study_id: int) -> dict[str, Any]:
    settings = self.settings
    with self.session() as s:
        st = claim_study(s, study_id, settings.task_stale_s)
        if st is None:
            return {"status": "skipped"}
        job = s.get(Job, st.job_id)
        assert job is not None
        uid = unseal(self.keys, st.uid_sealed, aad=f"study:{st.job_id}:{st.idx}")
        source, expected, job_id, attempt = job.pacs, st.expected, job.id, st.attempts
        policy, modalities = job.policy, job.modalities
    outcome = pacs.retrieve(
        settings, source, uid, expected, attempt=attempt, job=job_id,
        series_filter=series_filter(policy, modalities),
        should_stop=lambda: _cancelled(settings.db_url, study_id, job_id))
    if outcome.retry_in is not None:
        self.retry_later((study_id,), outcome.retry_in)
    with self.session() as s:
        todo = adopt_known(s, study_id)  # (instance, the node holding its file)
        retrieval_finished(s, study_id, complete=outcome.complete, reason=outcome.reason,
                           expected=outcome.expected, skipped=outcome.skipped,
                           skipped_reason=outcome.skipped_reason)
    enqueue_deidentify(settings, todo)
    after_instance(settings, study_id, job_id)
    return {"status": "ok", "complete": outcome.complete}
