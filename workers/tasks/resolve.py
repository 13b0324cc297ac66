"""resolve_job: C-FIND the job's request, record the studies found, queue their retrieval."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from service.core.queues import TaskName
from service.db.models.jobs import Job
from service.db.session import session_scope
from service.db.states import JobState
from service.jobs import pacs
from service.jobs.routing import enqueue
from service.jobs.schemas import unseal
from service.jobs.transitions import add_studies, claim_job, conditional_update, fail_job
from workers.tasks.base import DeidgateTask

log = logging.getLogger(__name__)


class ResolveTask(DeidgateTask):
    abstract = True

    def release(self, args: tuple[Any, ...]) -> None:
        with session_scope(self.settings.db_url) as s:
            s.execute(conditional_update(Job)
                      .where(Job.id == args[0], Job.state == JobState.RESOLVING)
                      .values(state=JobState.QUEUED))

    def on_failed(self, args: tuple[Any, ...], reason: str, attempts: int) -> None:
        """A PACS that refuses for good, a configuration error: the job fails with the reason."""
        with session_scope(self.settings.db_url) as s:
            fail_job(s, str(args[0]), reason)


@shared_task(bind=True, base=ResolveTask, name=TaskName.RESOLVE_JOB.value)
def resolve_job(self: DeidgateTask, job_id: str) -> dict[str, Any]:
    with self.session() as s:
        job = claim_job(s, job_id, self.settings.task_stale_s)
        if job is None:
            return {"status": "skipped"}
        request = unseal(self.keys, job.request_sealed, aad=f"job:{job.id}")
        found = pacs.find(self.settings, job.pacs, request)  # failures: the base task decides
        study_ids = add_studies(s, self.keys, job_id, found)
    log.info("job %s: %d studies found", job_id, len(found))
    for sid in study_ids:
        enqueue(self.settings, TaskName.RETRIEVE_STUDY, sid)
    return {"status": "ok", "studies": len(found)}
