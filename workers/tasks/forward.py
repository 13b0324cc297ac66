"""forward_study: C-STORE a finished study's de-identified files to the job's destination."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import shared_task
from sqlalchemy import select

from service.core.queues import TaskName
from service.db.models.jobs import Job, JobInstance, JobStudy
from service.db.session import session_scope
from service.db.states import InstanceState
from service.jobs import pacs
from service.jobs.transitions import conditional_update
from workers.tasks.base import DeidgateTask


@shared_task(bind=True, base=DeidgateTask, name=TaskName.FORWARD_STUDY.value)
def forward_study(self: DeidgateTask, study_id: int) -> dict[str, Any]:
    with self.session() as s:
        st = s.get(JobStudy, study_id)
        if st is None or st.forwarded:
            return {"status": "skipped"}
        job = s.get(Job, st.job_id)
        dest = job.destination if job else None
        paths = [Path(p) for p in s.scalars(select(JobInstance.out_path).where(
            JobInstance.study_id == study_id, JobInstance.state == InstanceState.WRITTEN)) if p]
    if not dest:
        return {"status": "skipped"}
    sent = pacs.forward(self.settings, dest, paths)
    with session_scope(self.settings.db_url) as s:
        s.execute(conditional_update(JobStudy).where(JobStudy.id == study_id)
                  .values(forwarded=True))
    return {"status": "ok", "sent": sent}
