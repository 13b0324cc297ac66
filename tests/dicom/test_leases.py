"""The per-PACS association limit holds across processes (issue 7 section 4): two worker
processes, three threads each, open associations to one real SCP (pynetdicom) whose node allows
two; the SCP counts how many are open at once. A semaphore per process would let four through."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from datetime import timedelta

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import func, select

from service.db.base import utcnow
from service.db.models.dicom import AssociationLease
from service.db.session import get_sessionmaker, session_scope
from service.dicom.admin import NodeConfig
from service.dicom.leases import Leases
from service.dicom.scu import PacsError, Timeouts, association

LIMIT = 2


def _node(port: int, db_url: str, ttl_s: float = 30.0) -> NodeConfig:
    return NodeConfig("pacs", "COUNTSCP", "127.0.0.1", port, max_associations=LIMIT,
                      leases=Leases(db_url, ttl_s=ttl_s, poll_s=0.05))


def _worker(port: int, db_url: str, threads: int, rounds: int, done: mp.Queue) -> None:
    """One worker process: ``threads`` threads, each echoing ``rounds`` times."""
    node = _node(port, db_url)
    ok: list[int] = []

    def run() -> None:
        for _ in range(rounds):
            with association(node, "TESTSCU", [(Verification, None)], Timeouts(slot=120)) as a:
                if a.send_c_echo().Status == 0:
                    ok.append(1)

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    done.put(len(ok))


class CountingSCP:
    """A C-ECHO SCP that holds each echo a moment and records the most associations open."""

    def __init__(self) -> None:
        self.open = self.most = 0
        self.lock = threading.Lock()
        ae = AE(ae_title="COUNTSCP")
        ae.add_supported_context(Verification)
        ae.maximum_associations = 20
        server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[
            (evt.EVT_ESTABLISHED, self._up), (evt.EVT_RELEASED, self._down),
            (evt.EVT_ABORTED, self._down), (evt.EVT_C_ECHO, self._echo)])
        assert server is not None
        self.server = server
        self.port = self.server.server_address[1]

    def _up(self, event: object) -> None:
        with self.lock:
            self.open += 1
            self.most = max(self.most, self.open)

    def _down(self, event: object) -> None:
        with self.lock:
            self.open -= 1

    def _echo(self, event: object) -> int:
        time.sleep(0.3)
        return 0x0000


def test_two_processes_share_the_limit(migrated_db: str) -> None:
    scp = CountingSCP()
    try:
        ctx = mp.get_context("spawn")
        done: mp.Queue = ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(scp.port, migrated_db, 3, 2, done))
                 for _ in range(2)]
        for p in procs:
            p.start()
        echoed = [done.get(timeout=180) for _ in procs]
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
    finally:
        scp.server.shutdown()
    assert echoed == [6, 6]
    assert scp.most == LIMIT  # both processes together, never more than the node allows
    with get_sessionmaker(migrated_db)() as s:  # every lease released at the end
        assert s.scalar(select(func.count()).select_from(AssociationLease)) == 0


def test_expired_leases_are_ignored_live_ones_count(migrated_db: str) -> None:
    node = _node(1, migrated_db)
    leases = node.leases
    assert leases is not None
    with session_scope(migrated_db) as s:  # a holder that died, and one that is alive
        s.add(AssociationLease(peer=node.peer, slot=0, holder="dead",
                               expires_at=utcnow() - timedelta(seconds=5)))
        s.add(AssociationLease(peer=node.peer, slot=1, holder="alive",
                               expires_at=utcnow() + timedelta(seconds=60)))
    assert leases.try_acquire(node.peer, LIMIT, "me") == 0  # the dead one's slot
    assert leases.try_acquire(node.peer, LIMIT, "other") is None  # both held now
    assert leases.try_acquire(node.peer, LIMIT + 1, "other") == 2  # a raised limit: one more
    leases.release(node.peer, 0, "not-me")  # only the holder releases
    assert leases.try_acquire(node.peer, LIMIT, "other") is None
    assert leases.renew(node.peer, 0, "me")
    leases.release(node.peer, 0, "me")
    assert leases.try_acquire(node.peer, LIMIT, "other") == 0


def test_no_free_lease_is_pacs_busy(migrated_db: str) -> None:
    node = _node(1, migrated_db)
    with session_scope(migrated_db) as s:
        for slot in range(LIMIT):
            s.add(AssociationLease(peer=node.peer, slot=slot, holder="elsewhere",
                                   expires_at=utcnow() + timedelta(seconds=60)))
    t0 = time.monotonic()
    with pytest.raises(PacsError) as err, \
            association(node, "TESTSCU", [(Verification, None)], Timeouts(slot=0.5)):
        pass
    assert err.value.code == "pacs-busy" and time.monotonic() - t0 < 5
