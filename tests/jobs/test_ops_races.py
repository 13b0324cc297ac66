"""Cancel and retry move a job only from the states they name, even when another process moves
it between their read and their write (SQLite and PostgreSQL).

The interleaving is forced, not hoped for: a hook on the operation's engine runs the other
transition on its own connection and commits it just before the operation's own UPDATE of the
job row reaches the database. Threads racing the same operation cover the unforced case."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from service.core.config import Settings
from service.core.keys import SiteKeys
from service.db.models.jobs import DeadLetter, Job, JobStudy
from service.db.session import get_engine, session_scope
from service.jobs import ops, transitions
from tests.jobs.conftest import submit


@contextmanager
def other_session(url: str) -> Iterator[Session]:
    """Another process's connection: its own engine, nothing shared with the operation's."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with sessionmaker(engine)() as s:
            yield s
    finally:
        engine.dispose()


@contextmanager
def before_job_update(url: str, interloper: Callable[[], None]) -> Iterator[list[int]]:
    """Run ``interloper`` once, right before the first UPDATE of ``jobs`` on ``url``'s engine."""
    engine = get_engine(url)
    fired: list[int] = []

    def hook(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not fired and statement.lstrip().upper().startswith("UPDATE JOBS"):
            fired.append(1)
            interloper()

    event.listen(engine, "before_cursor_execute", hook)
    try:
        yield fired
    finally:
        event.remove(engine, "before_cursor_execute", hook)


def _study(s: Session, job_id: str, state: str) -> int:
    st = JobStudy(job_id=job_id, idx=0, study_key="k" * 64, uid_sealed=b"x", state=state,
                  retrieved=True, attempts=1)
    s.add(st)
    s.flush()
    return st.id


def _state(url: str, job_id: str) -> tuple[str, int]:
    with session_scope(url) as s:
        row = s.execute(select(Job.state, Job.attempts).where(Job.id == job_id)).one()
    return str(row[0]), int(row[1])


def test_cancel_does_not_overwrite_a_job_that_finished_meanwhile(
        settings: Settings, site_keys: SiteKeys, jobs_db: str) -> None:
    with session_scope(jobs_db) as s:
        job_id = submit(s, settings, site_keys)
        s.execute(text("UPDATE jobs SET state = 'de-identifying' WHERE id = :id"),
                  {"id": job_id})
        _study(s, job_id, "complete")

    def finish() -> None:  # the last instance's worker: refresh_job sees every study complete
        with other_session(jobs_db) as o:
            assert transitions.refresh_job(o, job_id) == "done"

    with before_job_update(jobs_db, finish) as fired, session_scope(jobs_db) as s, \
            pytest.raises(ops.InvalidJobRequest, match="already done"):
        ops.cancel_job(s, job_id, actor="t", keys=site_keys)
    assert fired == [1]
    assert _state(jobs_db, job_id)[0] == "done"
    with session_scope(jobs_db) as s:  # no "job.cancelled" event for a cancel that did not happen
        kinds = list(s.scalars(text("SELECT kind FROM audit_events")))
    assert "job.cancelled" not in kinds


def test_retry_does_not_move_a_job_that_another_retry_moved_meanwhile(
        settings: Settings, site_keys: SiteKeys, jobs_db: str) -> None:
    with session_scope(jobs_db) as s:
        job_id = submit(s, settings, site_keys)
        s.execute(text("UPDATE jobs SET state = 'failed' WHERE id = :id"), {"id": job_id})
        _study(s, job_id, "failed")

    def other_retry() -> None:
        with other_session(jobs_db) as o:
            assert ops.retry_job(o, job_id, actor="other").state == "retrieving"

    with before_job_update(jobs_db, other_retry) as fired, session_scope(jobs_db) as s, \
            pytest.raises(ops.InvalidJobRequest, match="only finished jobs"):
        ops.retry_job(s, job_id, actor="t", settings=settings, keys=site_keys)
    assert fired == [1]
    assert _state(jobs_db, job_id) == ("retrieving", 1)  # retried once, not twice


def test_retry_does_not_revive_a_job_cancelled_and_resumed_meanwhile(
        settings: Settings, site_keys: SiteKeys, jobs_db: str) -> None:
    """Between retry's read (cancelled) and its write, someone else retried the job: the job is
    running again and must not be reset a second time (attempts, studies)."""
    with session_scope(jobs_db) as s:
        job_id = submit(s, settings, site_keys)
        ops.cancel_job(s, job_id, actor="t")

    def other_retry() -> None:
        with other_session(jobs_db) as o:
            assert ops.retry_job(o, job_id, actor="other").state == "queued"
            o.execute(text("UPDATE jobs SET state = 'resolving' WHERE id = :id"), {"id": job_id})
            o.commit()  # and a worker has started resolving it

    with before_job_update(jobs_db, other_retry), session_scope(jobs_db) as s, \
            pytest.raises(ops.InvalidJobRequest, match="is resolving"):
        ops.retry_job(s, job_id, actor="t")
    assert _state(jobs_db, job_id) == ("resolving", 1)


def test_dead_letter_retried_once_when_two_operators_race(
        settings: Settings, site_keys: SiteKeys, jobs_db: str) -> None:
    with session_scope(jobs_db) as s:
        job_id = submit(s, settings, site_keys)
        s.add(DeadLetter(task="deidgate.resolve_job", target=job_id, job_id=job_id,
                         reason="test", attempts=3, state="dead"))
        s.execute(text("UPDATE jobs SET state = 'failed' WHERE id = :id"), {"id": job_id})
    with session_scope(jobs_db) as s:
        dl_id = s.scalar(select(DeadLetter.id))
    assert dl_id is not None

    def other() -> None:
        with other_session(jobs_db) as o:
            assert ops.retry_dead_letter(o, settings, dl_id, actor="other").state == "retried"

    engine = get_engine(jobs_db)
    fired: list[int] = []

    def hook(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not fired and statement.lstrip().upper().startswith("UPDATE"):
            fired.append(1)
            other()

    event.listen(engine, "before_cursor_execute", hook)
    try:
        with session_scope(jobs_db) as s, pytest.raises(ops.InvalidJobRequest,
                                                         match="already retried"):
            ops.retry_dead_letter(s, settings, dl_id, actor="t")
    finally:
        event.remove(engine, "before_cursor_execute", hook)
    assert fired == [1]
    queue = settings.home / "broker" / "queue"
    resolves = [p for p in queue.iterdir() if b"deidgate.resolve_job" in p.read_bytes()]
    assert len(resolves) == 2  # the submission's and one retry, not two


def _race(n: int, work: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait(30)
            work(i)
        except BaseException as exc:  # collected for the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


@pytest.mark.timeout(300)
def test_concurrent_retries_and_cancels_each_happen_once(
        settings: Settings, site_keys: SiteKeys, jobs_db: str) -> None:
    rounds, n = 8, 4
    for _ in range(rounds):
        with session_scope(jobs_db) as s:
            job_id = submit(s, settings, site_keys)
            s.execute(text("UPDATE jobs SET state = 'failed' WHERE id = :id"), {"id": job_id})
            _study(s, job_id, "failed")

        def retry(i: int, job_id: str = job_id) -> None:
            with session_scope(jobs_db) as s:
                ops.retry_job(s, job_id, actor=f"r{i}")

        errors = _race(n, retry)
        assert len(errors) == n - 1 and all(isinstance(e, ops.InvalidJobRequest)
                                            for e in errors), errors
        assert _state(jobs_db, job_id) == ("retrieving", 1)

        def cancel(i: int, job_id: str = job_id) -> None:
            with session_scope(jobs_db) as s:
                ops.cancel_job(s, job_id, actor=f"c{i}", keys=site_keys)

        errors = _race(n, cancel)
        assert len(errors) == n - 1 and all(isinstance(e, ops.InvalidJobRequest)
                                            for e in errors), errors
        with session_scope(jobs_db) as s:
            cancelled = s.scalar(text("SELECT count(*) FROM audit_events WHERE kind = "
                                      "'job.cancelled' AND details LIKE :j"),
                                 {"j": f'%"{job_id}"%'})
        assert cancelled == 1
