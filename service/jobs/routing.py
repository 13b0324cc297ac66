"""Which queue each piece of work goes to, and publishing it.

Every publisher (the API and CLI through ``service.jobs.ops``, the listener hook, the tasks
themselves) enqueues through ``enqueue``; the queue follows from the task's name
(``service.core.queues.TASKS``): node-bound work goes to the ``deid.<node>`` queue of the host
holding the files, the rest to ``default``. A broker failure is logged, never raised: the row
is already committed, and the sweep enqueues it later (nothing is lost by a failed publish).
"""

from __future__ import annotations

import logging

from service.core.config import Settings
from service.core.queues import TASKS, TaskName, publisher_for, queue_for

log = logging.getLogger(__name__)


def enqueue(settings: Settings, task: TaskName, target: int | str | None = None, *,
            node: str | None = None) -> bool:
    """Publish ``task`` for the row ``target`` names (converted to the type the task takes);
    ``node``: the host whose spool holds the files (default: this one)."""
    kind = TASKS[task].target
    args = [] if kind is None or target is None else [kind(target)]
    try:
        publisher_for(settings).send(task, args, queue=queue_for(settings, task, node))
        return True
    except Exception as exc:
        log.warning("could not enqueue %s (%s); the sweep will retry", task, type(exc).__name__)
        return False
