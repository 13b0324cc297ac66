"""The listener's ``on_stored`` hook: link a spooled instance to its job and queue it.

Runs on the listener's association thread, so it does two small database statements and one
publish; a failure here is harmless (the instance stays "received" and the sweep links it).
"""

from __future__ import annotations

from collections.abc import Callable

from service.core.config import Settings
from service.core.queues import TaskName
from service.db.session import get_sessionmaker
from service.jobs.routing import enqueue
from service.jobs.transitions import link_received


def make_on_stored(settings: Settings) -> Callable[[int], None]:
    # not durable at commit (service.db.session): a link lost at a power cut leaves the
    # instance "received", and the sweep links it again
    sessions = get_sessionmaker(settings.db_url, False)

    def on_stored(received_id: int) -> None:
        with sessions() as s:
            row, needs = link_received(s, received_id)
            if row is not None and needs:  # to the node the file was received on
                enqueue(settings, TaskName.DEIDENTIFY_INSTANCE, row.id, node=row.node)

    return on_stored
