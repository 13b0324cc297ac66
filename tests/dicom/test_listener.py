"""The listener against real senders (dcmtk storescu / echoscu) and pynetdicom fault peers."""

from __future__ import annotations

import io
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import JPEG2000Lossless, RLELossless
from pynetdicom import AE
from sqlalchemy import select, text

from service.core.keys import SiteKeys
from service.db.models.dicom import AssociationAttempt, ReceivedInstance
from service.db.session import get_engine, session_scope
from service.dicom import admin
from service.dicom.listener import Listener
from service.dicom.uid_keys import uid_key
from synthetic.exam import fresh_exam
from tests.peers import faults
from tests.peers.dcmtk import echoscu, storescu

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _allow(url: str, ae: str, host: str | None = None) -> None:
    with session_scope(url) as s:
        admin.allow(s, ae, host)


def _rows(url: str) -> list[ReceivedInstance]:
    with session_scope(url) as s:
        return list(s.scalars(select(ReceivedInstance).order_by(ReceivedInstance.id)))


def _spooled(spool: Path) -> list[Path]:
    return sorted(spool.iterdir()) if spool.exists() else []


def _dataset_part(path: Path) -> tuple[bytes, str]:
    raw = path.read_bytes()
    fp = io.BytesIO(raw)
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    return raw[fp.tell():], str(meta.TransferSyntaxUID)


def test_store_records_keyed_instances_keeps_bytes_and_is_idempotent(
        migrated_db: str, site_keys: SiteKeys, tmp_path: Path,
        start_listener: Callable[..., Listener]) -> None:
    spool = tmp_path / "spool"
    stored: list[int] = []
    listener = start_listener(migrated_db, site_keys, spool, on_stored=stored.append)
    _allow(migrated_db, "STORESCU")
    plain = fresh_exam(tmp_path / "plain", index=1)
    j2k = fresh_exam(tmp_path / "j2k", index=2, transfer_syntax=JPEG2000Lossless)
    rle = fresh_exam(tmp_path / "rle", index=3, views=2, transfer_syntax=RLELossless)
    for files, extra in ((plain.files, []), (j2k.files, ["-xv"]), (rle.files, ["-xr"])):
        r = storescu(listener.port, files, extra=extra)
        assert r.returncode == 0, r.stderr

    rows = _rows(migrated_db)
    assert len(rows) == 10 and sorted(stored) == [r.id for r in rows]
    assert all(r.status == "received" and r.calling_ae == "STORESCU" for r in rows)
    by_key = {r.sop_key: r for r in rows}
    for exam in (plain, j2k, rle):
        for f, sop in zip(exam.files, exam.sop_uids, strict=True):
            row = by_key[uid_key(site_keys, sop)]
            assert row.study_key == uid_key(site_keys, exam.study_uid)
            got, ts = _dataset_part(Path(row.spool_path))
            want, want_ts = _dataset_part(f)
            assert ts == want_ts and got == want  # stored exactly as sent, never decompressed
            assert row.size_bytes == Path(row.spool_path).stat().st_size
    # names are random; no UID or patient value is stored in clear
    assert all(len(p.stem) == 32 and p.suffix == ".dcm" for p in _spooled(spool))
    with get_engine(migrated_db).connect() as c:
        dump = repr(c.execute(text("SELECT * FROM dicom_received_instances")).all())
    for exam in (plain, j2k):
        assert exam.study_uid not in dump and exam.sop_uids[0] not in dump
        assert exam.patient_id not in dump

    # duplicate: success again, no second file, no second row, no second hook call
    r = storescu(listener.port, plain.files)
    assert r.returncode == 0, r.stderr
    assert len(_rows(migrated_db)) == 10 and len(_spooled(spool)) == 10 and len(stored) == 10


def test_unknown_calling_ae_rejected_with_reason_and_recorded(
        migrated_db: str, site_keys: SiteKeys, tmp_path: Path,
        start_listener: Callable[..., Listener]) -> None:
    listener = start_listener(migrated_db, site_keys, tmp_path / "spool")
    r = echoscu(listener.port, calling="INTRUDER")
    assert r.returncode != 0
    assert "Rejected Permanent" in r.stderr and "Service User" in r.stderr
    assert "Calling AE Title Not Recognized" in r.stderr
    with session_scope(migrated_db) as s:
        att = list(s.scalars(select(AssociationAttempt)))
    assert [(a.calling_ae, a.peer_host, a.reason) for a in att] == [
        ("INTRUDER", "127.0.0.1", "calling-ae-not-allowed")]
    # allowed at run time, no restart; then pinned to another host -> rejected again
    _allow(migrated_db, "INTRUDER")
    assert echoscu(listener.port, calling="INTRUDER").returncode == 0
    with session_scope(migrated_db) as s:
        admin.disallow(s, "INTRUDER")
        admin.allow(s, "INTRUDER", "10.9.9.9")
    r = echoscu(listener.port, calling="INTRUDER")
    assert r.returncode != 0 and "Calling AE Title Not Recognized" in r.stderr
    _allow(migrated_db, "INTRUDER", "127.0.0.1")
    assert echoscu(listener.port, calling="INTRUDER").returncode == 0


PRIVATE_CLASS = "1.3.6.1.4.1.55555.1.1"  # a vendor's own storage class
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"  # not in our list; Explicit VR LE data set


def _private_object(tmp_path: Path) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = PRIVATE_CLASS, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "OT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = (
        ds.SOPClassUID, ds.SOPInstanceUID)
    path = tmp_path / "private.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_every_storage_class_is_accepted_as_offered(sqlite_db: str, site_keys: SiteKeys,
                                                    tmp_path: Path,
                                                    start_listener: Callable[..., Listener]
                                                    ) -> None:
    """Like storescp --promiscuous: a CT (dcmtk storescu), a private SOP class, and a transfer
    syntax outside our list are stored as they came; the policy refuses them later."""
    listener = start_listener(sqlite_db, site_keys, tmp_path / "spool")
    _allow(sqlite_db, "STORESCU")
    _allow(sqlite_db, "FAULTY")
    ct = Path(str(get_testdata_file("CT_small.dcm")))
    r = storescu(listener.port, [ct])
    assert r.returncode == 0, r.stderr
    raw, _cls, sop, _ts = faults.encoded_dataset(_private_object(tmp_path))
    kw: dict[str, Any] = {"sop_class": PRIVATE_CLASS, "sop_instance": sop, "tmp": tmp_path}
    assert faults.send_raw(listener.port, raw, ts=HTJ2K_LOSSLESS, **kw) == 0x0000
    rows = _rows(sqlite_db)
    assert [(r.sop_class_uid, r.transfer_syntax) for r in rows] == [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1"), (PRIVATE_CLASS, HTJ2K_LOSSLESS)]
    # a service we do not offer is still refused at negotiation (only storage is promiscuous)
    ae = AE(ae_title="FAULTY")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.2.2.2")  # Q/R MOVE
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="DEIDGATE")
    try:
        assert not assoc.is_established or not assoc.accepted_contexts
    finally:
        if assoc.is_established:
            assoc.release()


def test_malformed_and_mismatching_datasets_get_precise_statuses(
        sqlite_db: str, site_keys: SiteKeys, tmp_path: Path,
        start_listener: Callable[..., Listener]) -> None:
    listener = start_listener(sqlite_db, site_keys, tmp_path / "spool")
    _allow(sqlite_db, "FAULTY")
    exam = fresh_exam(tmp_path / "ex", views=1)
    raw, sop_class, sop, ts = faults.encoded_dataset(exam.files[0])
    kw: dict[str, Any] = {"sop_class": sop_class, "ts": ts, "tmp": tmp_path}
    assert faults.send_raw(listener.port, raw[: len(raw) - 100], sop_instance=sop, **kw) \
        == 0xC000  # truncated
    assert faults.send_raw(listener.port, b"\x13\x37" * 999, sop_instance=sop, **kw) == 0xC000
    # the dataset says another instance than the command: does not match
    assert faults.send_raw(listener.port, raw, sop_instance="1.2.3.4", **kw) == 0xA900
    # an image class without pixel data
    ds = dcmread(exam.files[0])
    del ds.PixelData
    nopix = tmp_path / "nopix.dcm"
    ds.save_as(nopix, enforce_file_format=True)
    raw2, *_ = faults.encoded_dataset(nopix)
    assert faults.send_raw(listener.port, raw2, sop_instance=sop, **kw) == 0xA900
    assert _rows(sqlite_db) == [] and _spooled(tmp_path / "spool") == []
    assert faults.send_raw(listener.port, raw, sop_instance=sop, **kw) == 0x0000
    assert len(_rows(sqlite_db)) == 1


def test_abort_and_stall_mid_transfer_leave_no_partial_file(
        sqlite_db: str, site_keys: SiteKeys, tmp_path: Path,
        start_listener: Callable[..., Listener]) -> None:
    listener = start_listener(sqlite_db, site_keys, tmp_path / "spool", network_timeout=1.0)
    _allow(sqlite_db, "FAULTY")
    exam = fresh_exam(tmp_path / "ex", views=1, rows=512, cols=400)  # ~400 KB, ~25 PDUs
    faults.send_partial(listener.port, exam.files[0], fraction=0.5, then="abort")
    stalled = faults.send_partial(listener.port, exam.files[0], fraction=0.5, then="stall",
                                  stall_s=5.0)
    assert not stalled.is_established  # the listener dropped the silent sender
    time.sleep(0.3)
    assert _rows(sqlite_db) == [] and _spooled(tmp_path / "spool") == []
    r = storescu(listener.port, exam.files, calling="FAULTY")  # listener still serves
    assert r.returncode == 0 and len(_rows(sqlite_db)) == 1


def test_low_disk_answers_out_of_resources(sqlite_db: str, site_keys: SiteKeys, tmp_path: Path,
                                           start_listener: Callable[..., Listener]) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    floor = shutil.disk_usage(spool).free + (1 << 30)  # floor above what is free
    listener = start_listener(sqlite_db, site_keys, spool, free_floor_bytes=floor)
    _allow(sqlite_db, "STORESCU")
    _allow(sqlite_db, "FAULTY")
    exam = fresh_exam(tmp_path / "ex", views=1)
    r = storescu(listener.port, exam.files, extra=["-v"])
    assert "Refused: OutOfResources" in r.stderr, r.stderr
    raw, sop_class, sop, ts = faults.encoded_dataset(exam.files[0])
    assert faults.send_raw(listener.port, raw, sop_class=sop_class, sop_instance=sop, ts=ts,
                           tmp=tmp_path) == 0xA700
    assert _rows(sqlite_db) == [] and _spooled(spool) == []


def test_concurrent_associations_max_pdu_and_clean_stop(
        sqlite_db: str, site_keys: SiteKeys, tmp_path: Path,
        start_listener: Callable[..., Listener]) -> None:
    listener = start_listener(sqlite_db, site_keys, tmp_path / "spool", max_pdu=2_097_152)
    for i in range(4):
        _allow(sqlite_db, f"SENDER{i}")
    exams = [fresh_exam(tmp_path / f"e{i}", index=i) for i in range(4)]
    results: list[int] = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        storescu(listener.port, exams[i].files, calling=f"SENDER{i}").returncode))
        for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [0, 0, 0, 0]
    keys = {r.sop_key for r in _rows(sqlite_db)}
    assert keys == {uid_key(site_keys, u) for e in exams for u in e.sop_uids}

    ae = AE(ae_title="SENDER0")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="DEIDGATE")
    assert assoc.is_established and assoc.acceptor.maximum_length == 2_097_152
    t0 = time.monotonic()
    listener.stop()  # with an association open: aborts it and returns promptly
    assert time.monotonic() - t0 < 10
    time.sleep(0.5)
    assert not assoc.is_established
    assert echoscu(listener.port, calling="SENDER0").returncode != 0  # no longer listening


def test_without_streaming_writes_the_same_bytes(sqlite_db: str, site_keys: SiteKeys,
                                                 tmp_path: Path,
                                                 start_listener: Callable[..., Listener]) -> None:
    """The fallback path (dataset written from memory after it arrived) stores identically."""
    spool = tmp_path / "spool"
    listener = start_listener(sqlite_db, site_keys, spool, stream_writes=False)
    _allow(sqlite_db, "STORESCU")
    exam = fresh_exam(tmp_path / "ex", views=2, transfer_syntax=JPEG2000Lossless)
    assert storescu(listener.port, exam.files, extra=["-xv"]).returncode == 0
    assert storescu(listener.port, exam.files, extra=["-xv"]).returncode == 0
    rows = _rows(sqlite_db)
    assert len(rows) == 2 and len(_spooled(spool)) == 2
    for f, sop in zip(exam.files, exam.sop_uids, strict=True):
        row = next(r for r in rows if r.sop_key == uid_key(site_keys, sop))
        assert _dataset_part(Path(row.spool_path)) == _dataset_part(f)
