"""The pipeline's tasks. Each takes an id, moves its row through the state machine in
service.jobs.orchestrate, and does one step: resolve (C-FIND), retrieve (C-MOVE/C-GET), de-identify
one spooled instance, forward a finished study, sweep.

``DeidgateTask`` maps the exception hierarchy in ONE place:
- ``Rejected``: the input is refused (the pipeline has already quarantined it); no retry.
- ``Retryable`` and anything unexpected: retry with exponential backoff and jitter; after
  ``task_max_retries`` the task is dead-lettered in the database with its reason (PHI-free), and
  the work it stood for is marked so the job ends failed and can be retried (CLI and API).
Tasks are idempotent: a redelivered or duplicated message finds its row already claimed or
finished and does nothing. ``acks_late`` + ``reject_on_worker_lost`` keep a message when its
worker dies; the sweep re-enqueues whatever the database says is unfinished in any case.
"""

from __future__ import annotations

import logging
import random
from functools import lru_cache
from pathlib import Path
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Retry
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.config import Settings
from service.core.errors import ConfigurationError, DeidgateError, Rejected
from service.core.keys import SiteKeys
from service.db.models.dicom import ReceivedInstance
from service.db.models.jobs import Job, JobInstance, JobStudy
from service.db.session import session_scope
from service.jobs import orchestrate as orc
from service.jobs.orchestrate import upd
from service.jobs.schemas import unseal

log = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def site_keys(path: Path) -> SiteKeys:
    """Workers never generate a key: a worker host without the site's key would otherwise
    start a second pseudonym space. `serve`, `listen` or any CLI command creates it first."""
    return SiteKeys.load(path, create=False)


@lru_cache(maxsize=16)
def deidentifier(policy: str, key_path: Path, project: str) -> Any:
    from workers.deid.engine import Deidentifier
    from workers.deid.policy import load_policy

    return Deidentifier(load_policy(policy), site_keys(key_path), project=project)


def safe_reason(exc: BaseException) -> str:
    """Our errors carry PHI-free reasons; anything else is named by type only (a library's
    message may quote a value from the dataset)."""
    if isinstance(exc, DeidgateError):
        return f"{exc.code}: {exc.reason}"[:500]
    return f"internal: {type(exc).__name__}"


class DeidgateTask(Task):
    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    max_retries = None  # counted in __call__ against settings.task_max_retries

    @property
    def settings(self) -> Settings:
        return self.app.settings  # type: ignore[attr-defined, no-any-return]

    @property
    def keys(self) -> SiteKeys:
        return site_keys(self.settings.site_key_path)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.run(*args, **kwargs)
        except Retry:
            raise
        except Rejected as exc:
            log.info("%s %s refused: %s", self.name, args[:1], exc.code)
            self.on_refused(args, exc)
            return {"status": "refused", "code": exc.code}
        except Exception as exc:
            reason = safe_reason(exc)
            self.release(args)
            tries = self.request.retries
            if tries < self.settings.task_max_retries and not self.request.is_eager:
                delay = min(300.0, self.settings.task_retry_base_s * 2**tries)
                delay *= 0.5 + random.random()  # noqa: S311 - jitter, not security
                log.warning("%s %s failed (%s); retry %d in %.1fs", self.name, args[:1], reason,
                            tries + 1, delay)
                raise self.retry(countdown=delay, max_retries=None) from None
            log.error("%s %s dead-lettered after %d attempts: %s", self.name, args[:1],
                      tries + 1, reason)
            with session_scope(self.settings.db_url) as s:
                orc.dead_letter(s, task=self.name, target=str(args[0]), reason=reason,
                                attempts=tries + 1)
            self.after_dead(args)
            return {"status": "dead-lettered", "reason": reason}

    # per-task hooks
    def on_refused(self, args: tuple[Any, ...], exc: Rejected) -> None:
        pass

    def release(self, args: tuple[Any, ...]) -> None:
        pass

    def after_dead(self, args: tuple[Any, ...]) -> None:
        pass


def _session(task: DeidgateTask) -> Session:
    from service.db.session import get_sessionmaker

    return get_sessionmaker(task.settings.db_url)()


# --- resolve --------------------------------------------------------------------------------------

class _ResolveTask(DeidgateTask):
    abstract = True

    def release(self, args: tuple[Any, ...]) -> None:
        with session_scope(self.settings.db_url) as s:
            s.execute(upd(Job).where(Job.id == args[0], Job.state == "resolving")
                      .values(state="queued"))


@shared_task(bind=True, base=_ResolveTask, name="deidgate.resolve_job")
def resolve_job(self: DeidgateTask, job_id: str) -> dict[str, Any]:
    from workers import edge

    with _session(self) as s:
        job = orc.claim_job(s, job_id, self.settings.task_stale_s)
        if job is None:
            return {"status": "skipped"}
        request = unseal(self.keys, job.request_sealed, aad=f"job:{job.id}")
        try:
            found = edge.find(s, self.settings, job.pacs, request)
        except (ConfigurationError, edge.PermanentPacsFailure) as exc:
            orc.fail_job(s, job_id, safe_reason(exc))  # retrying cannot fix these
            return {"status": "failed"}
        study_ids = orc.add_studies(s, self.keys, job_id, found)
    log.info("job %s: %d studies found", job_id, len(found))
    for sid in study_ids:
        orc.enqueue(self.settings, "deidgate.retrieve_study", sid)
    return {"status": "ok", "studies": len(found)}


# --- retrieve -------------------------------------------------------------------------------------

class _RetrieveTask(DeidgateTask):
    abstract = True

    def release(self, args: tuple[Any, ...]) -> None:
        with session_scope(self.settings.db_url) as s:
            orc.release_study(s, int(args[0]))

    def after_dead(self, args: tuple[Any, ...]) -> None:
        with session_scope(self.settings.db_url) as s:
            st = s.get(JobStudy, int(args[0]))
            job_id = st.job_id if st else None
        if job_id:
            with session_scope(self.settings.db_url) as s:
                orc.refresh_job(s, job_id)


@shared_task(bind=True, base=_RetrieveTask, name="deidgate.retrieve_study")
def retrieve_study(self: DeidgateTask, study_id: int) -> dict[str, Any]:
    from workers import edge

    settings = self.settings
    with _session(self) as s:
        st = orc.claim_study(s, study_id, settings.task_stale_s)
        if st is None:
            return {"status": "skipped"}
        job = s.get(Job, st.job_id)
        assert job is not None
        uid = unseal(self.keys, st.uid_sealed, aad=f"study:{st.job_id}:{st.idx}")
        pacs, expected, job_id = job.pacs, st.expected, job.id
    outcome = edge.retrieve(settings, pacs, uid, expected)
    node = orc.node_name(settings)
    with _session(self) as s:
        todo = orc.adopt_known(s, study_id, node=node)
        orc.retrieval_finished(s, study_id, complete=outcome.complete, reason=outcome.reason,
                               expected=outcome.expected)
    for iid in todo:
        orc.enqueue(settings, "deidgate.deidentify_instance", iid, queue=orc.deid_queue(settings))
    _after_instance(self, study_id, job_id)
    return {"status": "ok", "complete": outcome.complete}


# --- de-identify ----------------------------------------------------------------------------------

class _DeidTask(DeidgateTask):
    abstract = True

    def on_refused(self, args: tuple[Any, ...], exc: Rejected) -> None:
        with session_scope(self.settings.db_url) as s:
            orc.finish_instance(s, int(args[0]), state="failed", reason=exc.code)
        self.after_dead(args)

    def release(self, args: tuple[Any, ...]) -> None:
        with session_scope(self.settings.db_url) as s:
            orc.release_instance(s, int(args[0]))

    def after_dead(self, args: tuple[Any, ...]) -> None:
        with session_scope(self.settings.db_url) as s:
            ji = s.get(JobInstance, int(args[0]))
            ids = (ji.study_id, ji.job_id) if ji else (None, None)
        if ids[0] is not None and ids[1] is not None:
            _after_instance(self, ids[0], ids[1])


@shared_task(bind=True, base=_DeidTask, name="deidgate.deidentify_instance")
def deidentify_instance(self: DeidgateTask, instance_id: int) -> dict[str, Any]:
    from workers.deid.pipeline import InstanceResult, process_instance

    settings = self.settings
    with _session(self) as s:
        ji = orc.claim_instance(s, instance_id, settings.task_stale_s)
        if ji is None:
            return {"status": "skipped"}
        job = s.get(Job, ji.job_id) if ji.job_id else None
        policy = job.policy if job else settings.default_policy
        source = f"pacs:{job.pacs}" if job else "listener"
        src, job_id, study_id, rkey = Path(ji.spool_path), ji.job_id, ji.study_id, ji.received_key
    if not src.exists():
        _source_gone(self, instance_id, rkey)
    else:
        def on_commit(session: Session, result: InstanceResult) -> None:
            """Marked in the mapping's own transaction: no window where one is without the
            other. The claim stays until the identified copy is gone (see the sweep)."""
            session.execute(upd(JobInstance).where(JobInstance.id == instance_id).values(
                state=result.status, reason=result.reason_code,
                out_path=str(result.out_path) if result.out_path else None))
            if study_id is not None and result.study_uid:
                session.execute(upd(JobStudy).where(
                    JobStudy.id == study_id, JobStudy.pseudo_uid.is_(None))
                    .values(pseudo_uid=result.study_uid))
            session.execute(upd(ReceivedInstance).where(
                ReceivedInstance.id == int(rkey)).values(
                status="done" if result.status == "written" else "refused",
                reason=result.reason_code))

        result = process_instance(
            src, deidentifier=deidentifier(policy, settings.site_key_path, settings.project),
            db_url=settings.db_url, keys=self.keys, out_root=settings.output_dir,
            quarantine=settings.quarantine_dir, source=source, job_id=job_id,
            delete_source=True, on_commit=on_commit,
        )
        log.info("instance %d %s (study %s)", instance_id, result.status, result.study_uid)
    with session_scope(settings.db_url) as s:
        s.execute(upd(JobInstance).where(JobInstance.id == instance_id)
                  .values(claimed_at=None))
    if study_id is not None and job_id is not None:
        _after_instance(self, study_id, job_id)
    return {"status": "ok"}


def _source_gone(self: DeidgateTask, instance_id: int, rkey: str) -> None:
    """The spool file is gone: its work was committed by an earlier attempt (the pipeline
    deletes or quarantines only after committing), or another job's row processed it."""
    with session_scope(self.settings.db_url) as s:
        ji = s.get(JobInstance, instance_id)
        assert ji is not None
        if ji.state in ("written", "refused"):
            return
        other = s.scalars(select(JobInstance).where(
            JobInstance.received_key == rkey, JobInstance.id != instance_id,
            JobInstance.state.in_(("written", "refused")))).first()
        ri = s.get(ReceivedInstance, int(rkey))
        if other is not None:
            ji.state, ji.out_path, ji.reason = other.state, other.out_path, other.reason
        elif ri is not None and ri.status in ("done", "refused"):
            ji.state = "written" if ri.status == "done" else "refused"
            ji.reason = ri.reason
        else:
            raise Rejected("the spooled file disappeared before de-identification",
                           code="spool-missing")


def _after_instance(task: DeidgateTask, study_id: int, job_id: str) -> None:
    settings = task.settings
    with _session(task) as s:
        completed = orc.check_study(s, study_id)
    if completed:
        study_complete(settings, study_id, job_id)
    with _session(task) as s:
        orc.refresh_job(s, job_id)


def study_complete(settings: Settings, study_id: int, job_id: str) -> None:
    """Everything downstream of a fully de-identified study starts here (exactly once)."""
    with session_scope(settings.db_url) as s:
        job = s.get(Job, job_id)
        dest = job.destination if job else None
    if dest:
        orc.enqueue(settings, "deidgate.forward_study", study_id, queue=orc.deid_queue(settings))
    enqueue_scoring(settings, study_id)


def enqueue_scoring(settings: Settings, study_id: int) -> bool:
    """SCORING HOOK: the scoring issue enqueues the study on the "score" queue here (and moves
    the study/job through the "scoring" state). Until then no score exists, and none is faked."""
    return False


# --- forward to a research PACS -------------------------------------------------------------------

@shared_task(bind=True, base=DeidgateTask, name="deidgate.forward_study")
def forward_study(self: DeidgateTask, study_id: int) -> dict[str, Any]:
    from workers import edge

    with _session(self) as s:
        st = s.get(JobStudy, study_id)
        if st is None or st.forwarded:
            return {"status": "skipped"}
        job = s.get(Job, st.job_id)
        dest = job.destination if job else None
        paths = [Path(p) for p in s.scalars(select(JobInstance.out_path).where(
            JobInstance.study_id == study_id, JobInstance.state == "written")) if p]
    if not dest:
        return {"status": "skipped"}
    sent = edge.forward(self.settings, dest, paths)
    with session_scope(self.settings.db_url) as s:
        s.execute(upd(JobStudy).where(JobStudy.id == study_id).values(forwarded=True))
    return {"status": "ok", "sent": sent}


# --- sweep ----------------------------------------------------------------------------------------

@shared_task(bind=True, base=DeidgateTask, name="deidgate.sweep")
def sweep(self: DeidgateTask, startup: bool = False) -> dict[str, int]:
    return run_sweep(self.settings, startup=startup)


def run_sweep(settings: Settings, *, startup: bool = False) -> dict[str, int]:
    """Re-enqueue what the database says is unfinished (lost message, killed worker, restarted
    broker). Claims make a duplicate harmless."""
    from service.db.session import get_sessionmaker

    node = orc.node_name(settings)
    with get_sessionmaker(settings.db_url)() as s:
        res = orc.sweep(s, stale_s=settings.task_stale_s, startup=startup)
        linked = []
        for rid in res.unlinked:
            row, needs = orc.link_received(s, rid, node=node)
            if row is not None and needs:
                linked.append(row.id)
    for jid in res.jobs:
        orc.enqueue(settings, "deidgate.resolve_job", jid)
    for sid in res.studies:
        orc.enqueue(settings, "deidgate.retrieve_study", sid)
    for iid, inode in res.instances:
        orc.enqueue(settings, "deidgate.deidentify_instance", iid,
                    queue=orc.deid_queue(settings, inode or node))
    for iid in linked:
        orc.enqueue(settings, "deidgate.deidentify_instance", iid, queue=orc.deid_queue(settings))
    for sid, jid in res.completed:
        study_complete(settings, sid, jid)
    counts = {"jobs": len(res.jobs), "studies": len(res.studies),
              "instances": len(res.instances) + len(linked), "completed": len(res.completed)}
    if any(counts.values()):
        log.info("sweep re-enqueued %s", counts)
    from service.jobs.heartbeat import record_sweep

    with session_scope(settings.db_url) as s:  # the admin page's "last sweep"
        record_sweep(s, node, counts)
    return counts
