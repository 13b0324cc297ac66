"""retrieve_study: pull one study, one attempt per delivery.

An incomplete pull that may still succeed gives the study back and comes back after the
backoff through Celery's countdown (``retry_later``), so no worker slot waits asleep; each
claim of the study is one attempt (``JobStudy.attempts``), and the next asks the PACS only for
what is still missing. After the last attempt the study ends failed with the pull's reason.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from service.core.queues import TaskName, node_name
from service.db.models.jobs import Job, JobStudy
from service.db.session import session_scope
from service.jobs import pacs
from service.jobs.routing import enqueue
from service.jobs.schemas import unseal
from service.jobs.transitions import (
    adopt_known,
    claim_study,
    refresh_job,
    release_study,
    retrieval_finished,
)
from workers.tasks.base import DeidgateTask
from workers.tasks.completion import after_instance


class RetrieveTask(DeidgateTask):
    abstract = True

    def release(self, args: tuple[Any, ...]) -> None:
        with session_scope(self.settings.db_url) as s:
            release_study(s, int(args[0]))

    def after_dead(self, args: tuple[Any, ...]) -> None:
        with session_scope(self.settings.db_url) as s:
            st = s.get(JobStudy, int(args[0]))
            job_id = st.job_id if st else None
        if job_id:
            with session_scope(self.settings.db_url) as s:
                refresh_job(s, job_id)


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
    outcome = pacs.retrieve(settings, source, uid, expected, attempt=attempt, job=job_id)
    if outcome.retry_in is not None:
        self.retry_later((study_id,), outcome.retry_in)
    with self.session() as s:
        todo = adopt_known(s, study_id, node=node_name(settings))
        retrieval_finished(s, study_id, complete=outcome.complete, reason=outcome.reason,
                           expected=outcome.expected)
    for iid in todo:
        enqueue(settings, TaskName.DEIDENTIFY_INSTANCE, iid)
    after_instance(settings, study_id, job_id)
    return {"status": "ok", "complete": outcome.complete}
