"""The sweep: re-enqueue what the database says is unfinished (a lost message, a killed worker,
a restarted broker). Run by the worker on the listener's host (``workers.celery_app``) every
``sweep_interval_s``, and as a task when an operator's retry has nothing else to enqueue."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from service.core.config import Settings
from service.core.queues import TaskName, node_name
from service.db.session import get_sessionmaker, session_scope
from service.jobs import recovery
from service.jobs.heartbeat import record_sweep
from service.jobs.routing import enqueue, enqueue_deidentify
from service.jobs.transitions import link_received
from workers.tasks.base import DeidgateTask
from workers.tasks.completion import scoring_enabled, study_complete

log = logging.getLogger(__name__)


@shared_task(bind=True, base=DeidgateTask, name=TaskName.SWEEP.value)
def sweep(self: DeidgateTask, startup: bool = False) -> dict[str, Any]:
    return run_sweep(self.settings, startup=startup)


def run_sweep(settings: Settings, *, startup: bool = False) -> dict[str, int]:
    """Claims make a duplicate harmless, so re-enqueueing too much costs only a lookup."""
    node = node_name(settings)
    with get_sessionmaker(settings.db_url)() as s:
        res = recovery.sweep(s, stale_s=settings.task_stale_s, startup=startup,
                             score=scoring_enabled(settings))
        linked: list[tuple[int, str]] = []
        for rid in res.unlinked:
            row, needs = link_received(s, rid)
            if row is not None and needs:
                linked.append((row.id, row.node))
    for jid in res.jobs:
        enqueue(settings, TaskName.RESOLVE_JOB, jid)
    for sid in res.studies:
        enqueue(settings, TaskName.RETRIEVE_STUDY, sid)
    # each to the node whose spool holds its file, wherever this sweep runs
    enqueue_deidentify(settings, res.instances)
    enqueue_deidentify(settings, linked)
    for sid, jid in res.completed:
        study_complete(settings, sid, jid)
    for sid in res.scoring:
        enqueue(settings, TaskName.SCORE_STUDY, sid)
    counts = {"jobs": len(res.jobs), "studies": len(res.studies),
              "instances": len(res.instances) + len(linked), "completed": len(res.completed),
              "scoring": len(res.scoring)}
    if any(counts.values()):
        log.info("sweep re-enqueued %s", counts)
    with session_scope(settings.db_url) as s:  # the admin page's "last sweep"
        record_sweep(s, node, counts)
    return counts
