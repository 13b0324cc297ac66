"""Queue and worker health for the admin page: what the broker and the database can tell.

- queue depths: messages waiting in each queue (``default``, ``score``, ``deid.<node>`` for
  every node that holds work), asked of the broker with a short timeout;
- unfinished work per node: instances pending or being processed, and the oldest of them,
  from the database (which, not the broker, is the record of what is unfinished);
- the last sweep per node (``sweep_heartbeats``, written by the sweeper);
- spool and output disk: free space against the spool's refusal floor, and the spool's size.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.core.config import Settings
from service.core.queues import broker_options, deid_queue, node_name
from service.db.base import as_utc, utcnow
from service.db.models.jobs import JobInstance
from service.db.models.web import SweepHeartbeat
from service.db.states import InstanceState


@dataclass
class NodeWork:
    node: str
    pending: int = 0
    processing: int = 0
    oldest: datetime | None = None
    last_sweep: datetime | None = None
    sweep_counts: dict[str, int] = field(default_factory=dict)
    queue: str = ""
    queue_depth: int | None = None


@dataclass
class Disk:
    label: str
    path: str
    free_mb: int
    total_mb: int
    floor_mb: int | None = None

    @property
    def below_floor(self) -> bool:
        return self.floor_mb is not None and self.free_mb < self.floor_mb

    @property
    def used_pct(self) -> int:
        return round(100 * (self.total_mb - self.free_mb) / self.total_mb) if self.total_mb else 0


@dataclass
class Health:
    broker: str
    broker_error: str | None
    queues: dict[str, int | None]
    nodes: list[NodeWork]
    disks: list[Disk]
    spool_files: int
    spool_mb: float
    checked_at: datetime


def queue_depths(settings: Settings, queues: list[str]) -> tuple[dict[str, int | None],
                                                                  str | None]:
    """Messages waiting per queue; None for a queue the broker does not know yet."""
    from kombu import Connection

    url, options = broker_options(settings)
    if not settings.broker_url:
        folder = Path(options["data_folder_in"])
        if not folder.is_dir():
            return dict.fromkeys(queues), "the filesystem broker's folder does not exist yet"
    out: dict[str, int | None] = {}
    try:
        with Connection(url, transport_options=options, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
            channel = conn.channel()
            try:
                for q in queues:
                    try:
                        out[q] = int(channel.queue_declare(queue=q, passive=True).message_count)
                    except Exception:  # passive declare of an unknown queue
                        out[q] = None
            finally:
                channel.close()
    except Exception as exc:  # the broker is down: say so, the page still renders
        return dict.fromkeys(queues), f"broker unreachable ({type(exc).__name__})"
    return out, None


def _disk(label: str, path: Path, floor_mb: int | None = None) -> Disk:
    usage = shutil.disk_usage(path)
    return Disk(label, str(path), usage.free // 2**20, usage.total // 2**20, floor_mb)


def _spool_size(spool: Path) -> tuple[int, float]:
    n, size = 0, 0
    with os.scandir(spool) as it:
        for entry in it:
            if entry.is_file(follow_symlinks=False):
                n += 1
                size += entry.stat(follow_symlinks=False).st_size
    return n, size / 2**20


def collect(session: Session, settings: Settings) -> Health:
    here = node_name(settings)
    nodes: dict[str, NodeWork] = {here: NodeWork(here)}
    rows = session.execute(
        select(JobInstance.node, JobInstance.state, func.count(), func.min(JobInstance.updated_at))
        .where(JobInstance.state.in_((InstanceState.PENDING, InstanceState.PROCESSING)))
        .group_by(JobInstance.node, JobInstance.state))
    for node, state, n, oldest in rows:
        w = nodes.setdefault(node or here, NodeWork(node or here))
        if state == InstanceState.PENDING:
            w.pending += n
        else:
            w.processing += n
        o = as_utc(oldest)
        w.oldest = o if w.oldest is None or (o and o < w.oldest) else w.oldest
    for hb in session.scalars(select(SweepHeartbeat)):
        w = nodes.setdefault(hb.node, NodeWork(hb.node))
        w.last_sweep = as_utc(hb.at)
        w.sweep_counts = json.loads(hb.counts or "{}")
    for w in nodes.values():
        w.queue = deid_queue(settings, w.node)
    queues = ["default", "score", *sorted(w.queue for w in nodes.values())]
    depths, error = queue_depths(settings, queues)
    for w in nodes.values():
        w.queue_depth = depths.get(w.queue)
    settings.ensure_dirs()
    n_files, spool_mb = _spool_size(settings.spool_dir)
    disks = [_disk("spool", settings.spool_dir, settings.spool_free_floor_mb),
             _disk("output", settings.output_dir)]
    broker = "Redis / Celery broker" if settings.broker_url else "filesystem (embedded)"
    return Health(broker, error, depths, sorted(nodes.values(), key=lambda w: w.node), disks,
                  n_files, spool_mb, utcnow())
