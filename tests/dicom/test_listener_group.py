"""The listener as several processes on one port (SO_REUSEPORT), against real dcmtk senders."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from service.core.keys import SiteKeys
from service.db.models.dicom import ReceivedInstance
from service.db.session import session_scope
from service.dicom import admin
from service.dicom.listener import ListenerConfig
from service.dicom.listener_group import ListenerGroup, resolve_processes
from service.dicom.spool import Spool
from service.dicom.uid_keys import uid_key
from synthetic.exam import fresh_exam
from tests.peers.dcmtk import echoscu, storescu

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]


def _pid_hook(folder: Path) -> Callable[[int], None]:
    """Built inside each listener process: marks which process stored which row."""
    def on_stored(received_id: int) -> None:
        (folder / f"{os.getpid()}-{received_id}").touch()
    return on_stored


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


@pytest.fixture()
def group_of_two(tmp_path: Path, site_keys: SiteKeys) -> Iterator[Callable[[str], ListenerGroup]]:
    started: list[ListenerGroup] = []

    def _start(db_url: str) -> ListenerGroup:
        marks = tmp_path / "marks"
        marks.mkdir(exist_ok=True)
        factory = functools.partial(_pid_hook, marks)
        g = ListenerGroup(ListenerConfig(ae_title="DEIDGATE", host="127.0.0.1", port=0,
                                         allow_cache_s=0.0),
                          db_url=db_url, keys=site_keys, spool=Spool(tmp_path / "spool"),
                          processes=2, on_stored=factory(), on_stored_factory=factory)
        started.append(g.start())
        return g

    try:
        yield _start
    finally:
        for g in started:
            g.stop()


def _send_all(port: int, jobs: list[tuple[str, list[Path]]], threads: int = 4) -> list[int]:
    codes: list[int] = []
    lock = threading.Lock()

    def worker(mine: list[tuple[str, list[Path]]]) -> None:
        for calling, files in mine:
            rc = storescu(port, files, calling=calling).returncode
            with lock:
                codes.append(rc)

    ts = [threading.Thread(target=worker, args=(jobs[i::threads],)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    return codes


def test_two_processes_share_the_port_lose_nothing_and_stop_clean(
        sqlite_db: str, site_keys: SiteKeys, tmp_path: Path,
        group_of_two: Callable[[str], ListenerGroup]) -> None:
    with session_scope(sqlite_db) as s:
        for i in range(4):
            admin.allow(s, f"SENDER{i}")
    g = group_of_two(sqlite_db)
    child_pids = [p.pid for p in g.children]
    assert len(child_pids) == 1 and g.alive() == 1
    exam = fresh_exam(tmp_path / "exam", views=16, rows=32, cols=32)
    # one association per file (16 of them): the kernel hashes each connection to a process
    jobs = [(f"SENDER{i % 4}", [f]) for i, f in enumerate(exam.files)]
    assert _send_all(g.port, jobs) == [0] * 16
    with session_scope(sqlite_db) as s:
        keys = set(s.scalars(select(ReceivedInstance.sop_key)))
    assert keys == {uid_key(site_keys, u) for u in exam.sop_uids}
    assert len(list((tmp_path / "spool").glob("*.dcm"))) == 16
    pids = {int(p.name.split("-")[0]) for p in (tmp_path / "marks").iterdir()}
    assert pids == {os.getpid(), *child_pids}  # both processes received, each its own hook

    # an unknown calling AE is refused by whichever process gets it
    for _ in range(4):
        assert storescu(g.port, exam.files[:1], calling="STRANGER").returncode != 0

    t0 = time.monotonic()
    g.stop()
    assert time.monotonic() - t0 < 15
    assert not any(_alive(pid) for pid in child_pids)
    assert echoscu(g.port, calling="SENDER0").returncode != 0  # nobody listens any more


def test_same_instance_from_concurrent_senders_yields_one_file_and_row(
        migrated_db: str, site_keys: SiteKeys, tmp_path: Path,
        group_of_two: Callable[[str], ListenerGroup]) -> None:
    """Across processes only the database's unique key can arbitrate (SQLite and PostgreSQL)."""
    db_url = migrated_db
    with session_scope(db_url) as s:
        for i in range(8):
            admin.allow(s, f"SENDER{i}")
    g = group_of_two(db_url)
    exam = fresh_exam(tmp_path / "exam", views=4, rows=32, cols=32)
    jobs = [(f"SENDER{i}", exam.files) for i in range(8)]  # 8 associations, same 4 instances
    assert _send_all(g.port, jobs, threads=8) == [0] * 8
    with session_scope(db_url) as s:
        rows = list(s.scalars(select(ReceivedInstance)))
    assert sorted(r.sop_key for r in rows) == sorted(uid_key(site_keys, u)
                                                      for u in exam.sop_uids)
    assert sorted(Path(r.spool_path).name for r in rows) == sorted(
        p.name for p in (tmp_path / "spool").iterdir())  # no second file, no .part left


CHILD_OF_KILLED = r"""
import sys
from pathlib import Path
from service.core.keys import SiteKeys
from service.dicom.listener import ListenerConfig
from service.dicom.listener_group import ListenerGroup
from service.dicom.spool import Spool
d, url = Path(sys.argv[1]), sys.argv[2]
g = ListenerGroup(ListenerConfig(ae_title="DEIDGATE", host="127.0.0.1", port=0), db_url=url,
                  keys=SiteKeys.load(d / "site.key"), spool=Spool(d / "spool"), processes=3)
g.start()
print(" ".join(str(p.pid) for p in g.children), flush=True)
import time
time.sleep(600)
"""


def test_children_do_not_outlive_a_killed_parent(sqlite_db: str, tmp_path: Path,
                                                 site_keys: SiteKeys) -> None:
    SiteKeys.load(tmp_path / "site.key")  # creates it
    proc = subprocess.Popen([sys.executable, "-c", CHILD_OF_KILLED, str(tmp_path), sqlite_db],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids)


def test_automatic_process_count() -> None:
    assert resolve_processes(3) == 3
    assert resolve_processes(0) == max(1, min(2, os.cpu_count() or 1))
