"""The listener's ``on_stored`` hook: link a spooled instance to its job and queue it.

Runs on the listener's association thread, so it does two small database statements and one
publish; a failure here is harmless (the instance stays "received" and the sweep links it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from service.core.config import Settings
from service.db.session import get_sessionmaker
from service.jobs import orchestrate as orc

log = logging.getLogger(__name__)


def make_on_stored(settings: Settings) -> Callable[[int], None]:
    node = orc.node_name(settings)
    queue = orc.deid_queue(settings)
    sessions = get_sessionmaker(settings.db_url)

    def on_stored(received_id: int) -> None:
        with sessions() as s:
            row, needs = orc.link_received(s, received_id, node=node)
        if row is not None and needs:
            orc.enqueue(settings, "deidgate.deidentify_instance", row.id, queue=queue)

    return on_stored
