"""deidentify_instance: one spooled file through the engine, marked done in the mapping's own
transaction; the identified copy is deleted only after that commit (``process_instance``)."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from celery import shared_task
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.errors import Rejected
from service.core.keys import SiteKeys
from service.core.queues import TaskName, node_name
from service.db.models.dicom import ReceivedInstance
from service.db.models.jobs import Job, JobInstance, JobStudy
from service.db.session import get_sessionmaker, session_scope
from service.db.states import (
    COMMITTED_INSTANCE_STATES,
    InstanceState,
    ReceivedStatus,
)
from service.jobs.routing import enqueue
from service.jobs.transitions import (
    claim_instance,
    conditional_update,
    finish_instance,
    release_instance,
)
from workers.deid.pipeline import InstanceResult, process_instance
from workers.tasks.base import DeidgateTask
from workers.tasks.completion import after_instance

log = logging.getLogger(__name__)


def deidentifier(policy: str, keys: SiteKeys, project: str) -> Any:
    """One engine per policy version per pool process (loaded once, kept warm).

    Keyed by the policy files' content hash, read on every call (a few kilobytes): a policy
    edited after the worker started is applied from the next task on, as the API's check at
    submission already sees it; a name alone would keep the old rules until a restart."""
    from workers.deid.policy import policy_fingerprint

    return _deidentifier(policy, policy_fingerprint(policy), keys, project)


@lru_cache(maxsize=16)
def _deidentifier(policy: str, fingerprint: str, keys: SiteKeys, project: str) -> Any:
    from workers.deid.engine import Deidentifier  # the engine's imports are heavy: first use
    from workers.deid.policy import load_policy

    return Deidentifier(load_policy(policy), keys, project=project)


class DeidTask(DeidgateTask):
    abstract = True

    def on_refused(self, args: tuple[Any, ...], exc: Rejected) -> None:
        with session_scope(self.settings.db_url) as s:
            finish_instance(s, int(args[0]), state=InstanceState.FAILED, reason=exc.code)
        self.after_dead(args)

    def release(self, args: tuple[Any, ...]) -> None:
        with session_scope(self.settings.db_url) as s:
            release_instance(s, int(args[0]))

    def after_dead(self, args: tuple[Any, ...]) -> None:
        with session_scope(self.settings.db_url) as s:
            ji = s.get(JobInstance, int(args[0]))
            ids = (ji.study_id, ji.job_id) if ji else (None, None)
        if ids[0] is not None and ids[1] is not None:
            after_instance(self.settings, ids[0], ids[1])


@shared_task(bind=True, base=DeidTask, name=TaskName.DEIDENTIFY_INSTANCE.value)
def deidentify_instance(self: DeidgateTask, instance_id: int) -> dict[str, Any]:
    settings = self.settings
    here = node_name(settings)
    with self.session() as s:
        held_on = s.scalar(select(ReceivedInstance.node).join(
            JobInstance, JobInstance.received_id == ReceivedInstance.id).where(
            JobInstance.id == instance_id))
    if held_on is not None and held_on != here:
        # another host's file (a message published before its node was recorded, or by
        # mistake): never read another host's spool; send it to the host that holds it
        log.warning("instance %d is held by node %s, not %s: re-routed", instance_id, held_on,
                    here)
        enqueue(settings, TaskName.DEIDENTIFY_INSTANCE, instance_id, node=held_on)
        return {"status": "rerouted", "node": held_on}
    # The claim and its release (below) commit without waiting for the disk
    # (service.db.session): a claim lost at a power cut leaves the instance pending (redone; the
    # work is idempotent), a lost release leaves a claim that goes stale and is taken over. The
    # mapping commit in process_instance stays fully durable, and makes these durable with it.
    with get_sessionmaker(settings.db_url, False)() as s:
        ji = claim_instance(s, instance_id, settings.task_stale_s)
        if ji is None:
            return {"status": "skipped"}
        job = s.get(Job, ji.job_id) if ji.job_id else None
        policy = job.policy if job else settings.default_policy
        source = f"pacs:{job.pacs}" if job else "listener"
        src, job_id, study_id, received_id = (Path(ji.spool_path), ji.job_id, ji.study_id,
                                              ji.received_id)
    if not src.exists():
        _source_gone(self, instance_id, received_id)
    else:
        def on_commit(session: Session, result: InstanceResult) -> None:
            """Marked in the mapping's own transaction: no window where one is without the
            other. The claim stays until the identified copy is gone (see the sweep)."""
            session.execute(conditional_update(JobInstance)
                            .where(JobInstance.id == instance_id)
                            .values(state=InstanceState(result.status),
                                    reason=result.reason_code,
                                    out_path=str(result.out_path) if result.out_path else None))
            if study_id is not None and result.pseudo_study_uid:
                session.execute(conditional_update(JobStudy)
                                .where(JobStudy.id == study_id, JobStudy.pseudo_uid.is_(None))
                                .values(pseudo_uid=result.pseudo_study_uid))
            session.execute(conditional_update(ReceivedInstance)
                            .where(ReceivedInstance.id == received_id)
                            .values(status=ReceivedStatus.DONE if result.status == "written"
                                    else ReceivedStatus.REFUSED, reason=result.reason_code))

        result = process_instance(
            src, deidentifier=deidentifier(policy, self.keys, settings.project),
            db_url=settings.db_url, keys=self.keys, out_root=settings.output_dir,
            quarantine=settings.quarantine_dir, source=source, job_id=job_id,
            delete_source=True, on_commit=on_commit,
        )
        log.info("instance %d %s (study %s)", instance_id, result.status,
                 result.pseudo_study_uid)
    with session_scope(settings.db_url, durable=False) as s:
        s.execute(conditional_update(JobInstance).where(JobInstance.id == instance_id)
                  .values(claimed_at=None))
    if study_id is not None and job_id is not None:
        after_instance(settings, study_id, job_id)
    return {"status": "ok"}


def _source_gone(self: DeidgateTask, instance_id: int, received_id: int) -> None:
    """The spool file is gone: its work was committed by an earlier attempt (the pipeline
    deletes or quarantines only after committing), or another job's row processed it."""
    with session_scope(self.settings.db_url) as s:
        ji = s.get(JobInstance, instance_id)
        assert ji is not None
        if ji.state in COMMITTED_INSTANCE_STATES:
            return
        other = s.scalars(select(JobInstance).where(
            JobInstance.received_id == received_id, JobInstance.id != instance_id,
            JobInstance.state.in_(COMMITTED_INSTANCE_STATES))).first()
        ri = s.get(ReceivedInstance, received_id)
        if other is not None:
            ji.state, ji.out_path, ji.reason = other.state, other.out_path, other.reason
        elif ri is not None and ri.status in (ReceivedStatus.DONE, ReceivedStatus.REFUSED):
            ji.state = (InstanceState.WRITTEN if ri.status == ReceivedStatus.DONE
                        else InstanceState.REFUSED)
            ji.reason = ri.reason
        else:
            raise Rejected("the spooled file disappeared before de-identification",
                           code="spool-missing")
