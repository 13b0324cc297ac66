"""The hash chain: tampering by raw SQL (triggers dropped, as a superuser could) is detected
and attributed to the right rows; concurrent appenders keep one linear chain."""

# Tampering is raw SQL by design (what a superuser would run); the values are test constants.
# ruff: noqa: S608

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import select, text

from service.audit import AuditStore
from service.audit.chain import canonical_details
from service.core.errors import ConfigurationError
from service.core.keys import SiteKeys
from service.db.models.audit import AuditEvent
from service.db.session import session_scope
from tests.audit.util import outcome, tamper

N = 8


def _fill(url: str, keys: SiteKeys, n: int = N) -> None:
    with session_scope(url) as s:
        store = AuditStore(s, keys)
        for i in range(1, n + 1):
            store.log_event("test", actor="pytest", details={"i": i, "pseudonym": f"PSN-{i}"})


def _verify(url: str, keys: SiteKeys):  # type: ignore[no-untyped-def]
    with session_scope(url) as s:
        return AuditStore(s, keys).verify_chain()


def test_intact_chain_verifies(migrated_db: str, site_keys: SiteKeys) -> None:
    _fill(migrated_db, site_keys)
    report = _verify(migrated_db, site_keys)
    assert report.ok and report.events == N and report.head_seq == N
    assert report.first_bad_seq is None
    with session_scope(migrated_db) as s:
        rows = s.execute(select(AuditEvent.seq, AuditEvent.prev_hash, AuditEvent.hash)
                         .order_by(AuditEvent.seq)).all()
    assert [r.seq for r in rows] == list(range(1, N + 1))
    assert all(rows[i].prev_hash == rows[i - 1].hash for i in range(1, N))


def test_edited_row_is_named(migrated_db: str, site_keys: SiteKeys) -> None:
    _fill(migrated_db, site_keys)
    tamper(migrated_db, "UPDATE audit_events SET details = '{\"i\":3,\"pseudonym\":\"PSN-X\"}' "
                        "WHERE seq = 3")
    report = _verify(migrated_db, site_keys)
    assert not report.ok
    assert report.edited == [3] and report.deleted == [] and report.reordered == []
    assert report.first_bad_seq == 3
    assert report.lines() == ["seq 3: edited: content does not match its hash"]


def test_edit_with_recomputed_plain_sha256_is_still_caught(migrated_db: str,
                                                            site_keys: SiteKeys) -> None:
    """A bare SHA-256 chain could be recomputed by the tamperer; the HMAC chain cannot."""
    _fill(migrated_db, site_keys)
    forged = hashlib.sha256(b"forged").hexdigest()
    tamper(migrated_db, f"UPDATE audit_events SET actor = 'someone-else', hash = '{forged}' "
                        "WHERE seq = 5")
    report = _verify(migrated_db, site_keys)
    assert report.edited == [5] and report.deleted == [] and report.reordered == []
    assert report.first_bad_seq == 5


def test_deleted_row_is_named(migrated_db: str, site_keys: SiteKeys) -> None:
    _fill(migrated_db, site_keys)
    tamper(migrated_db, "DELETE FROM audit_events WHERE seq = 4")
    report = _verify(migrated_db, site_keys)
    assert report.deleted == [4] and report.edited == [] and report.reordered == []
    assert report.first_bad_seq == 4
    assert report.lines() == ["seq 4: deleted: seq 4 missing"]


def test_deleted_and_renumbered_rows_are_found(migrated_db: str, site_keys: SiteKeys) -> None:
    _fill(migrated_db, site_keys)
    tamper(migrated_db, "DELETE FROM audit_events WHERE seq = 4",
           *[f"UPDATE audit_events SET seq = {s - 1} WHERE seq = {s}" for s in range(5, N + 1)],
           f"UPDATE audit_chain_head SET seq = {N - 1}")
    report = _verify(migrated_db, site_keys)
    assert report.deleted == [4] and report.edited == [] and report.reordered == []


def test_truncated_tail_is_found(migrated_db: str, site_keys: SiteKeys) -> None:
    _fill(migrated_db, site_keys)
    tamper(migrated_db, f"DELETE FROM audit_events WHERE seq >= {N - 1}")
    report = _verify(migrated_db, site_keys)
    assert report.deleted == [N - 1] and report.first_bad_seq == N - 1
    assert report.lines() == [f"seq {N - 1}: deleted: seq {N - 1}-{N} missing at the tail"]


def test_reordered_pair_is_named(migrated_db: str, site_keys: SiteKeys) -> None:
    _fill(migrated_db, site_keys)
    tamper(migrated_db,
           "UPDATE audit_events SET seq = -1 WHERE seq = 3",
           "UPDATE audit_events SET seq = 3 WHERE seq = 4",
           "UPDATE audit_events SET seq = 4 WHERE seq = -1")
    report = _verify(migrated_db, site_keys)
    assert report.reordered == [3, 4] and report.edited == [] and report.deleted == []
    assert report.first_bad_seq == 3


def test_row_moved_far_is_named(migrated_db: str, site_keys: SiteKeys) -> None:
    _fill(migrated_db, site_keys)
    # rotate: event 2 moved to the end, 3..N shifted down one
    tamper(migrated_db,
           "UPDATE audit_events SET seq = -2 WHERE seq = 2",
           *[f"UPDATE audit_events SET seq = {s - 1} WHERE seq = {s}" for s in range(3, N + 1)],
           f"UPDATE audit_events SET seq = {N} WHERE seq = -2")
    report = _verify(migrated_db, site_keys)
    assert report.reordered == [N] and report.edited == [] and report.deleted == []
    assert any(f.problem == "head" for f in report.findings)


def test_appended_forgery_behind_the_head_is_found(migrated_db: str,
                                                   site_keys: SiteKeys) -> None:
    _fill(migrated_db, site_keys)
    with session_scope(migrated_db) as s:
        last = s.scalar(select(AuditEvent.hash).where(AuditEvent.seq == N))
    details = canonical_details({"note": "forged"})
    tamper(migrated_db, "INSERT INTO audit_events (seq, at, kind, actor, details, prev_hash, hash) "
                        f"VALUES ({N + 1}, '2026-01-01 00:00:00', 'test', 'x', '{details}', "
                        f"'{last}', '{'ab' * 32}')")
    report = _verify(migrated_db, site_keys)
    assert report.edited == [N + 1]
    assert {f.problem for f in report.findings} == {"edited", "unanchored"}


def _append_concurrently(url: str, keys: SiteKeys, threads: int, per_thread: int,
                         *, outcomes: bool = False) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def work(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                with session_scope(url) as s:
                    store = AuditStore(s, keys)
                    if outcomes:  # every thread records the same few instances
                        store.record_outcome(outcome(i % 3), source=f"w{t}", job_id=None)
                    else:
                        store.log_event("test", actor=f"w{t}", details={"i": i})
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(timeout=120)
    return errors


def test_concurrent_appends_keep_one_chain(migrated_db: str, site_keys: SiteKeys) -> None:
    threads, per = 6, 15
    assert _append_concurrently(migrated_db, site_keys, threads, per) == []
    report = _verify(migrated_db, site_keys)
    assert report.ok, report.lines()
    assert report.events == threads * per == report.head_seq


def test_concurrent_recorders_keep_one_chain_and_no_duplicates(migrated_db: str,
                                                               site_keys: SiteKeys) -> None:
    threads, per = 4, 6
    assert _append_concurrently(migrated_db, site_keys, threads, per, outcomes=True) == []
    with session_scope(migrated_db) as s:
        assert s.scalar(text("SELECT count(*) FROM audit_mappings")) == 15
        store = AuditStore(s, site_keys)
        assert sum(e.details["new_mappings"] for e in store.events("deidentified")) == 15
        report = store.verify_chain()
    assert report.ok and report.events == threads * per


@pytest.mark.parametrize("n", [0, 1])
def test_short_chains(migrated_db: str, site_keys: SiteKeys, n: int) -> None:
    _fill(migrated_db, site_keys, n)
    assert _verify(migrated_db, site_keys).ok
    if n:
        tamper(migrated_db, "DELETE FROM audit_events")
        report = _verify(migrated_db, site_keys)
        assert report.deleted == [1] and report.events == 0


_WORKER = """
import sys
from pathlib import Path
from service.audit import AuditStore
from service.core.errors import ConfigurationError
from service.core.keys import SiteKeys
from service.db.session import session_scope
url, key, name, n = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
keys = SiteKeys.load(key, create=False)
for i in range(n):
    with session_scope(url) as s:
        AuditStore(s, keys).log_event("test", actor=name, details={"i": i})
"""


def test_concurrent_worker_processes_keep_one_chain(migrated_db: str, site_keys: SiteKeys,
                                                    home: Path) -> None:
    """Separate processes (as Celery workers are) appending at once."""
    procs, per = 3, 20
    key = home / "keys" / "site.key"
    running = [subprocess.Popen([sys.executable, "-c", _WORKER, migrated_db, str(key),
                                 f"worker-{p}", str(per)], stderr=subprocess.PIPE)
               for p in range(procs)]
    for p in running:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    report = _verify(migrated_db, site_keys)
    assert report.ok, report.lines()
    assert report.events == report.head_seq == procs * per
    with session_scope(migrated_db) as s:
        actors = [e.actor for e in AuditStore(s, site_keys).events(limit=None)]
    assert {a: actors.count(a) for a in set(actors)} == {f"worker-{p}": per for p in range(procs)}


def test_missing_head_row_is_reported_and_refuses_appends(migrated_db: str,
                                                          site_keys: SiteKeys) -> None:
    _fill(migrated_db, site_keys, 2)
    tamper(migrated_db, "DELETE FROM audit_chain_head")
    report = _verify(migrated_db, site_keys)
    assert [f.problem for f in report.findings] == ["head"] and report.first_bad_seq == 0
    with pytest.raises(ConfigurationError), session_scope(migrated_db) as s:
        AuditStore(s, site_keys).log_event("test", actor="pytest", details={})
