"""The per-PACS association limit, held across processes and hosts: leases in the database.

A PACS allows a few associations from us at once (``PacsNode.max_associations``); the workers
that open them run as many processes on several hosts, so a semaphore per process lets
processes x limit through. Here each open association holds a lease: a row
(peer, slot) with a holder and an expiry, ``slot`` < the limit. Taking one is a conditional
statement the database decides for everyone: INSERT of a free slot (the primary key refuses a
second holder), or UPDATE of a slot whose lease has expired (its holder died without releasing:
a SIGKILL, a power cut). The holder renews its lease while the association lasts and deletes it
at the end. Leases of a higher old limit finish under the old count; new ones use the new limit.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from service.db.base import utcnow
from service.db.models.dicom import AssociationLease
from service.db.session import get_sessionmaker

log = logging.getLogger(__name__)


def _holder() -> str:
    return f"{socket.gethostname()[:48]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Leases:
    """The lease table of one database. ``ttl_s``: how long a lease outlives a silent holder
    (renewed every third of it while held)."""

    db_url: str = field(repr=False)  # may carry a password
    ttl_s: float = 60.0
    poll_s: float = 0.25

    def try_acquire(self, peer: str, limit: int, holder: str) -> int | None:
        """A free slot for ``holder``, or None when all ``limit`` are held (and alive)."""
        sessions = get_sessionmaker(self.db_url)
        now = utcnow()
        expires = now + timedelta(seconds=self.ttl_s)
        with sessions() as s:
            for slot in range(max(1, limit)):
                taken = s.execute(update(AssociationLease).where(
                    AssociationLease.peer == peer, AssociationLease.slot == slot,
                    AssociationLease.expires_at < now,
                ).values(holder=holder, expires_at=expires))
                s.commit()
                if taken.rowcount == 1:  # type: ignore[attr-defined]
                    return slot
                s.add(AssociationLease(peer=peer, slot=slot, holder=holder, expires_at=expires))
                try:
                    s.commit()
                    return slot
                except IntegrityError:  # held by someone else
                    s.rollback()
        return None

    def renew(self, peer: str, slot: int, holder: str) -> bool:
        with get_sessionmaker(self.db_url)() as s:
            res = s.execute(update(AssociationLease).where(
                AssociationLease.peer == peer, AssociationLease.slot == slot,
                AssociationLease.holder == holder,
            ).values(expires_at=utcnow() + timedelta(seconds=self.ttl_s)))
            s.commit()
            return res.rowcount == 1  # type: ignore[attr-defined, no-any-return]

    def release(self, peer: str, slot: int, holder: str) -> None:
        with get_sessionmaker(self.db_url)() as s:
            s.execute(delete(AssociationLease).where(
                AssociationLease.peer == peer, AssociationLease.slot == slot,
                AssociationLease.holder == holder))
            s.commit()

    @contextmanager
    def hold(self, peer: str, limit: int, *, wait_s: float) -> Iterator[int | None]:
        """A lease for the duration of the block; yields its slot, or None when none came free
        within ``wait_s`` (the caller answers "busy")."""
        holder = _holder()
        deadline = time.monotonic() + wait_s
        slot = self.try_acquire(peer, limit, holder)
        while slot is None and time.monotonic() < deadline:
            time.sleep(self.poll_s * (0.5 + random.random()))  # noqa: S311 - jitter
            slot = self.try_acquire(peer, limit, holder)
        if slot is None:
            yield None
            return
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew_until, args=(peer, slot, holder, stop),
                                   name="deidgate-lease", daemon=True)
        renewer.start()
        try:
            yield slot
        finally:
            stop.set()
            renewer.join(timeout=5)
            try:
                self.release(peer, slot, holder)
            except Exception as exc:  # it expires on its own after ttl_s
                log.warning("association lease not released (%s)", type(exc).__name__)

    def _renew_until(self, peer: str, slot: int, holder: str, stop: threading.Event) -> None:
        while not stop.wait(self.ttl_s / 3):
            try:
                if not self.renew(peer, slot, holder):
                    log.warning("association lease on %s slot %d was lost", peer, slot)
                    return
            except Exception as exc:  # the database is restarting: try again next round
                log.warning("association lease renewal failed (%s)", type(exc).__name__)
