"""The sweeper's heartbeat: when each node last swept, and what it re-enqueued.

Written by ``workers.tasks.run_sweep`` after every sweep (one row per node, replaced), read by
the admin health page: a node whose last sweep is old has no running sweeper, so lost work on
it is not being redone.
"""

from __future__ import annotations

import json

from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models.web import SweepHeartbeat


def record_sweep(session: Session, node: str, counts: dict[str, int]) -> None:
    text = json.dumps(counts, sort_keys=True)
    row = session.get(SweepHeartbeat, node)
    if row is None:
        session.add(SweepHeartbeat(node=node, at=utcnow(), counts=text))
    else:
        row.at, row.counts = utcnow(), text
