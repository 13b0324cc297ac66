"""Which queue each piece of work goes to, and publishing it.

Every publisher (the API and CLI through ``service.jobs.ops``, the listener hook, the tasks
themselves) enqueues through ``enqueue``; the queue follows from the task's name
(``service.core.queues.TASKS``): node-bound work goes to the ``deid.<node>`` queue of the host
holding the files, the rest to ``default``. A node-bound task must name that host: the publisher's
own node is wrong whenever it runs elsewhere (a sweep, a retry, a retrieve task on the default
queue), and the task would then land on a host without the file ("spool-missing"). For
de-identification the host is the one recorded with the received file
(``ReceivedInstance.node``); ``instance_nodes`` reads it.

A broker failure is logged, never raised: the row is already committed, and the sweep enqueues it
later (nothing is lost by a failed publish).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.config import Settings
from service.core.queues import TASKS, TaskName, publisher_for, queue_for
from service.db.models.dicom import ReceivedInstance
from service.db.models.jobs import JobInstance

log = logging.getLogger(__name__)


def enqueue(settings: Settings, task: TaskName, target: int | str | None = None, *,
            node: str | None = None) -> bool:
    """Publish ``task`` for the row ``target`` names (converted to the type the task takes);
    ``node``: the host whose spool holds the files, required for node-bound tasks."""
    if TASKS[task].on_node and not node:
        raise ValueError(f"{task} runs on the host holding its files: name that node")
    kind = TASKS[task].target
    args = [] if kind is None or target is None else [kind(target)]
    try:
        publisher_for(settings).send(task, args, queue=queue_for(settings, task, node))
        return True
    except Exception as exc:
        log.warning("could not enqueue %s (%s); the sweep will retry", task, type(exc).__name__)
        return False


def instance_nodes(session: Session, instance_ids: Iterable[int]) -> list[tuple[int, str]]:
    """(job instance id, the node whose spool holds its file), in id order."""
    ids = list(instance_ids)
    if not ids:
        return []
    return [(i, n) for i, n in session.execute(
        select(JobInstance.id, ReceivedInstance.node)
        .join(ReceivedInstance, ReceivedInstance.id == JobInstance.received_id)
        .where(JobInstance.id.in_(ids)).order_by(JobInstance.id))]


def enqueue_deidentify(settings: Settings, instances: Iterable[tuple[int, str]]) -> None:
    """De-identify each (instance id, node) on the queue of the node holding its file."""
    for iid, node in instances:
        enqueue(settings, TaskName.DEIDENTIFY_INSTANCE, iid, node=node)
