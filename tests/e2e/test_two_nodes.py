"""Two worker nodes on one machine (issue 7 section 4): each its own node name, spool and output
store, one PostgreSQL and one Redis broker, real Celery worker processes.

Node A runs the listener (its hook has failed: rows stay "received") and a worker on ``deid.A``
only. Node B runs the default queue (C-FIND, C-MOVE: the retrieve task links what A received) and
``deid.B`` with its own empty spool, and it sweeps every second. Two jobs pull from Orthanc into
A; a third exam is pushed to A with storescu and only B's sweep links it. A's output store is
broken at first (a file where its folder should be), so every instance really fails on A, is
retried and dead-lettered; it is repaired, and then B retries the first job and the dead letters
of the rest. Every instance must be de-identified on A: a de-identification sent to ``deid.B``
would end "spool-missing" there, with the identified copy left in A's spool.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.cli.serve import settings_env, worker_command
from service.core.config import Settings
from service.core.keys import SiteKeys
from service.core.queues import DEFAULT_QUEUE, deid_queue
from service.db.migrate import upgrade
from service.db.models.dicom import ReceivedInstance
from service.db.models.jobs import DeadLetter, JobInstance
from service.db.session import get_sessionmaker, session_scope
from service.db.states import DeadLetterState
from service.dicom import admin
from service.dicom.listener import Listener
from service.jobs import ops
from synthetic.exam import Exam, fresh_exam
from tests.e2e.harness import GW_AE, make_settings, redis_server
from tests.peers.dcmtk import storescu
from tests.peers.orthanc import orthanc_server

pytestmark = pytest.mark.integration


@contextmanager
def worker(settings: Settings, queues: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    out = log.open("ab")
    proc = subprocess.Popen(worker_command(settings, queues=queues, concurrency=1),
                            env=settings_env(settings), stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=20)
        out.close()


def _wait(what: str, check: Callable[[], bool], db: str, timeout: float = 240) -> None:
    """Generous: the machine running the tests is shared."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            with get_sessionmaker(db)() as s:
                states = s.execute(select(JobInstance.state, JobInstance.reason, func.count())
                                   .group_by(JobInstance.state, JobInstance.reason)).all()
            raise AssertionError(f"timed out waiting for {what}: {states}")
        time.sleep(0.2)


def test_instances_received_at_a_are_deidentified_on_a(tmp_path: Path, pg_url: str) -> None:
    with redis_server(tmp_path) as (broker, _):
        key = tmp_path / "site.key"
        a = make_settings(tmp_path / "a", db_url=pg_url, broker_url=broker, key_file=key)
        b = make_settings(tmp_path / "b", db_url=pg_url, broker_url=broker, key_file=key)
        a = a.model_copy(update={"sweep_interval_s": 3600})  # only B sweeps after start-up
        assert a.node_name != b.node_name and a.spool_dir != b.spool_dir
        upgrade(pg_url)
        keys = SiteKeys.load(key)  # the site's key, the same file on every host
        exams = [fresh_exam(tmp_path / "exams", index=i) for i in range(3)]
        with session_scope(pg_url) as s:
            admin.seed(s, a)
            admin.set_local_ae(s, a, ae_title=GW_AE, host="127.0.0.1", port=a.dicom_port)
            admin.allow(s, "STORESCU")
        a.output_dir.rmdir()
        a.output_dir.write_text("not a folder")  # every de-identification on A fails for now
        with orthanc_server(tmp_path / "orthanc",
                            modalities={"gw": (GW_AE, "127.0.0.1", a.dicom_port)}) as o:
            for e in exams[:2]:
                o.upload(*e.files)
            with session_scope(pg_url) as s:
                admin.add_node(s, "orthanc", ae_title=o.ae_title, host="127.0.0.1",
                               port=o.dicom_port)
                admin.allow(s, o.ae_title)
            listener = Listener.from_settings(a, db_url=pg_url, keys=keys, on_stored=None,
                                              host="127.0.0.1", port=a.dicom_port,
                                              allow_cache_s=0.0).start()
            try:
                with worker(a, [deid_queue(a)], tmp_path / "worker-a.log"), \
                        worker(b, [DEFAULT_QUEUE, deid_queue(b)], tmp_path / "worker-b.log"):
                    _run(a, b, keys, exams, pg_url)
            finally:
                listener.stop()


def _run(a: Settings, b: Settings, keys: SiteKeys, exams: list[Exam], db: str) -> None:
    sessions = get_sessionmaker(db)
    with sessions() as s:  # submitted on B (its API or CLI)
        jobs = [ops.submit_job(s, b, keys, ops.parse_job_request(
            {"pacs": "orthanc", "accession_numbers": [e.accession]}), actor="t").id
            for e in exams[:2]]
    r = storescu(a.dicom_port, exams[2].files, called=GW_AE)  # no job asked for this one
    assert r.returncode == 0, r.stderr

    def settled() -> bool:
        with sessions() as s:
            n = s.scalar(select(func.count()).select_from(JobInstance)) or 0
            busy = s.scalar(select(func.count()).select_from(JobInstance).where(
                JobInstance.state.in_(("pending", "processing")))) or 0
        return n == 12 and busy == 0

    _wait("every instance to fail on A and be dead-lettered", settled, db)
    with sessions() as s:
        assert set(s.scalars(select(ReceivedInstance.node))) == {a.node_name}
        states = dict(s.execute(select(JobInstance.state, func.count())
                                .group_by(JobInstance.state)).all())
        reasons = set(s.scalars(select(JobInstance.reason)))
        assert states == {"dead-lettered": 12}, (states, reasons)  # failed on A, not on B
    a.output_dir.unlink()
    a.output_dir.mkdir()  # repaired; B retries
    with sessions() as s:
        ops.retry_job(s, jobs[0], actor="t", settings=b)
        for dl in s.scalars(select(DeadLetter).where(DeadLetter.state == DeadLetterState.DEAD)
                            .order_by(DeadLetter.id)).all():
            ops.retry_dead_letter(s, b, dl.id, actor="t")

    def written() -> bool:
        with sessions() as s:
            return (s.scalar(select(func.count()).select_from(JobInstance).where(
                JobInstance.state == "written")) or 0) == 12

    _wait("every instance to be written", written, db)
    with sessions() as s:
        first = ops.get_job(s, jobs[0])  # the retried job; the others' instances came back
        assert first is not None and first.state == "done", first  # by their dead letters
        assert set(s.scalars(select(JobInstance.reason))) == {None}  # no spool-missing
    assert len(list(a.output_dir.rglob("*.dcm"))) == 12  # de-identified on A ...
    assert not b.output_dir.exists() or list(b.output_dir.rglob("*.dcm")) == []  # ... not B
    assert [p for p in a.spool_dir.iterdir() if p.is_file()] == []  # no identified copy left
