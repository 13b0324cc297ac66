"""Orphan spool files: renamed into the spool, no dicom_received_instances row (a crash between
the handler's rename and its insert). The listener finds them when it starts, before accepting,
and registers them (so the normal flow de-identifies them) or quarantines them with a reason.

Two designs, both on SQLite and PostgreSQL:
- the real crash: a listener process whose spool SIGKILLs the process right after the rename
  (a Spool subclass in the test's own script; no fault hook in the product), a real storescu
  sender, then the embedded gateway (listener + Celery worker) started on the same data folder;
- the state arranged exactly as such a crash leaves it (a spool file written through
  ``Spool.write``, no row), with the unreadable and duplicate cases beside it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from service.audit.store import AuditStore
from service.cli.serve import settings_env, start_embedded
from service.core.config import Settings
from service.core.keys import SiteKeys
from service.db.migrate import upgrade
from service.db.models.dicom import ReceivedInstance
from service.db.session import get_sessionmaker, session_scope
from service.dicom import admin
from service.dicom.orphans import recover_orphans
from service.dicom.spool import Spool
from service.dicom.uid_keys import uid_key
from synthetic.exam import fresh_exam
from tests.e2e.harness import make_settings
from tests.peers.dcmtk import storescu

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]

CRASHING_LISTENER = r"""
import os, signal, sys, time
from service.core.config import load_settings
from service.core.keys import SiteKeys
from service.dicom.listener import Listener, config_from_settings
from service.dicom.spool import Spool


class CrashAfterRename(Spool):
    '''The file is under its final name and its folder is fsynced; the row is not inserted.'''

    def write(self, chunks):
        out = super().write(chunks)
        os.kill(os.getpid(), signal.SIGKILL)
        return out

    def commit_part(self, path, fd):
        out = super().commit_part(path, fd)
        os.kill(os.getpid(), signal.SIGKILL)
        return out


settings = load_settings()
conf, spool = config_from_settings(settings, db_url=settings.db_url)
crashing = CrashAfterRename(spool.root, free_floor_bytes=spool.free_floor_bytes,
                            quarantine=spool.quarantine)
conf.stream_writes = sys.argv[1] == "stream"  # .part + commit_part, or one write at the end
Listener(conf, db_url=settings.db_url, keys=SiteKeys.for_settings(settings),
         spool=crashing).start()
print("ready", flush=True)
time.sleep(600)
"""


def _rows(url: str) -> list[ReceivedInstance]:
    with session_scope(url) as s:
        return list(s.scalars(select(ReceivedInstance).order_by(ReceivedInstance.id)))


def _spooled(spool: Path) -> list[Path]:
    return sorted(p for p in spool.iterdir() if p.is_file())


def _reasons(quarantine: Path) -> dict[str, str]:
    """quarantined file name -> reason code (from the reason file beside it)."""
    out = {}
    for f in sorted(quarantine.glob("*.json")):
        assert f.with_suffix(".dcm").exists()
        out[f.with_suffix(".dcm").name] = json.loads(f.read_text())["code"]
    return out


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["stream", "whole"])
def test_listener_killed_right_after_the_rename_loses_nothing(
        tmp_path: Path, db_url: str, mode: str) -> None:
    settings = make_settings(tmp_path, db_url=db_url)
    upgrade(settings.db_url)
    keys = SiteKeys.for_settings(settings)
    with session_scope(settings.db_url) as s:
        admin.seed(s, settings)
        admin.set_local_ae(s, settings, ae_title="DEIDGATE", host="127.0.0.1",
                           port=settings.dicom_port)
        admin.allow(s, "STORESCU")
    exam = fresh_exam(tmp_path / "exam", views=1, rows=64, cols=64)

    # 1. the crash: SIGKILL between the spool's rename and the row's insert
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_LISTENER, mode], cwd=ROOT,
                            env=settings_env(settings), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        sent = storescu(settings.dicom_port, exam.files[:1])
        assert proc.wait(30) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert sent.returncode != 0  # the sender was never told "stored"
    [orphan] = _spooled(settings.spool_dir)
    assert orphan.suffix == ".dcm" and _rows(settings.db_url) == []
    # beside it, an orphan nobody can read (say, cut short by a failing disk)
    junk = settings.spool_dir / ("ab" * 16 + ".dcm")
    junk.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x14\x00")

    # 2. the gateway starts on the same data folder: the listener's leader recovers first
    log = (tmp_path / "worker.log").open("ab")
    emb = start_embedded(settings, settings.db_url, api=False, listener=True, worker=True,
                         concurrency=1, log_file=log)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            rows = _rows(settings.db_url)
            if rows and rows[0].status == "done" and not any(
                    p.suffix == ".dcm" for p in _spooled(settings.spool_dir)):
                break
            time.sleep(0.5)
        rows = _rows(settings.db_url)
        assert [r.status for r in rows] == ["done"], (rows, (tmp_path / "worker.log")
                                                      .read_text()[-3000:])
        [row] = rows
        assert row.sop_key == uid_key(keys, exam.sop_uids[0])
        assert row.study_key == uid_key(keys, exam.study_uid)
        [out] = list(settings.output_dir.rglob("*.dcm"))
        ds = dcmread(out)
        assert ds.PatientID != exam.patient_id and ds.SOPInstanceUID != exam.sop_uids[0]
        assert exam.patient_id.encode() not in out.read_bytes()
        assert _spooled(settings.spool_dir) == []  # the identified copy is gone
        assert list(_reasons(settings.quarantine_dir).values()) == ["orphan-unreadable"]
        # the sender's retry is answered as already stored, with no second file or row
        assert storescu(settings.dicom_port, exam.files[:1]).returncode == 0
        assert len(_rows(settings.db_url)) == 1
        with get_sessionmaker(settings.db_url)() as s:
            assert AuditStore(s, keys).verify_chain().ok
    finally:
        emb.kill_workers()
        emb.stop(timeout=20)
        log.close()


def test_orphans_registered_quarantined_or_left_alone(
        tmp_path: Path, settings: Settings, migrated_db: str, site_keys: SiteKeys) -> None:
    """The state a crash leaves, arranged: the spool's own write, then no insert."""
    spool = Spool(settings.spool_dir, quarantine=settings.quarantine_dir)
    exam = fresh_exam(tmp_path / "exam", views=3, rows=32, cols=32)
    orphan, _ = spool.write([exam.files[0].read_bytes()])
    # a file with its row: not an orphan
    known, size = spool.write([exam.files[1].read_bytes()])
    with session_scope(migrated_db) as s:
        s.add(ReceivedInstance(sop_key=uid_key(site_keys, exam.sop_uids[1]),
                               series_key="s" * 64, study_key="t" * 64,
                               sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
                               transfer_syntax="1.2.840.10008.1.2.1", spool_path=str(known),
                               node="local", calling_ae="STORESCU", size_bytes=size,
                               status="received"))
    spool.write([exam.files[1].read_bytes()])  # a second copy of an instance already held
    spool.write([exam.files[2].read_bytes()[:-100]])  # truncated
    spool.write([b"this is not a DICOM file"])
    stored: list[int] = []

    report = recover_orphans(spool, db_url=migrated_db, keys=site_keys, on_stored=stored.append)

    rows = {r.spool_path: r for r in _rows(migrated_db)}
    assert set(rows) == {str(orphan), str(known)}
    new = rows[str(orphan)]
    assert new.sop_key == uid_key(site_keys, exam.sop_uids[0])
    assert new.study_key == uid_key(site_keys, exam.study_uid)
    assert new.series_key == uid_key(site_keys, exam.series_uids[0])
    assert new.status == "received" and new.size_bytes == orphan.stat().st_size
    assert new.transfer_syntax == str(dcmread(exam.files[0]).file_meta.TransferSyntaxUID)
    assert stored == [new.id] == report.registered
    assert _spooled(settings.spool_dir) == sorted([orphan, known])
    reasons = _reasons(settings.quarantine_dir)
    assert sorted(reasons.values()) == ["orphan-duplicate", "orphan-unreadable",
                                        "orphan-unreadable"]
    assert sorted(code for _, code in report.quarantined) == sorted(reasons.values())
    quarantined = sorted(p.read_bytes() for p in settings.quarantine_dir.glob("*.dcm"))
    assert quarantined == sorted([exam.files[1].read_bytes(), exam.files[2].read_bytes()[:-100],
                                  b"this is not a DICOM file"])  # moved, never deleted
    for f in settings.quarantine_dir.glob("*.json"):  # reasons hold no identifiers
        text = f.read_text()
        assert exam.patient_id not in text and exam.study_uid not in text
    assert not any(p in str(report) for p in (exam.patient_id, exam.study_uid))

    again = recover_orphans(spool, db_url=migrated_db, keys=site_keys, on_stored=stored.append)
    assert again.registered == [] and again.quarantined == [] and stored == [new.id]
    with session_scope(migrated_db) as s:
        assert s.scalar(select(func.count()).select_from(ReceivedInstance)) == 2


def test_handler_keeps_a_file_that_recovery_registered_under_it(
        tmp_path: Path, sqlite_db: str, site_keys: SiteKeys) -> None:
    """Another process's recovery (a listener starting while a worker's C-GET is between rename
    and insert) registers the handler's file first: the handler's insert then conflicts, and it
    must keep the file, which the row now names, instead of discarding it as a duplicate."""
    from service.dicom.listener import Listener, ListenerConfig

    class RecoveryRunsNow(Spool):
        def write(self, chunks):  # type: ignore[no-untyped-def]
            out = super().write(chunks)
            recover_orphans(self, db_url=sqlite_db, keys=site_keys)
            return out

    with session_scope(sqlite_db) as s:
        admin.allow(s, "STORESCU")
    spool = RecoveryRunsNow(tmp_path / "spool", quarantine=tmp_path / "quarantine")
    listener = Listener(ListenerConfig(ae_title="DEIDGATE", host="127.0.0.1", port=0,
                                       allow_cache_s=0.0, stream_writes=False),
                        db_url=sqlite_db, keys=site_keys, spool=spool).start(sweep=False)
    try:
        exam = fresh_exam(tmp_path / "exam", views=1, rows=32, cols=32)
        assert storescu(listener.port, exam.files).returncode == 0
    finally:
        listener.stop()
    [row] = _rows(sqlite_db)
    assert row.calling_ae == "(recovered)" and Path(row.spool_path).exists()
    assert _spooled(tmp_path / "spool") == [Path(row.spool_path)]
