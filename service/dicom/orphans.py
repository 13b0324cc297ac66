"""Spool files without a row: what a crash between the spool's rename and the insert leaves.

The C-STORE handler writes the file durably (fsync, rename, folder fsync), then inserts its
``dicom_received_instances`` row, then answers the sender. A crash (power cut, SIGKILL) between
the rename and the insert leaves a complete identified file that nothing knows about: the sweep
follows rows, not files, so it would stay in the spool forever, neither de-identified nor
removed. The sender was never told "stored"; it may resend, or (a C-MOVE sub-operation, a
modality giving up) it may not.

``recover_orphans`` runs when the listener starts (the leader, before it accepts, so none of its
own associations is between rename and insert) and, for each such file:

- registers it: the header is read with the handler's own check (``parse.read_header``), the
  UIDs are keyed as the handler keys them, a "received" row is inserted and the ``on_stored``
  hook called, so the normal flow links, de-identifies and deletes it;
- or, when it cannot be read (not DICOM, truncated, UIDs missing) or its instance is already
  held under another file, moves it durably to quarantine with a reason file beside it.

Nothing is deleted. Another process may write into the same spool meanwhile (a worker's C-GET
runs the same handler): if it inserts the row first, the file is recognised by its name; if this
inserts first, the handler keeps its file because the row names it (``StoreSink``).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

from pydicom.filereader import _read_file_meta_info, read_preamble
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from service.core.fsync import move_durably, write_durably
from service.core.keys import SiteKeys
from service.db.models.dicom import ReceivedInstance
from service.db.session import get_sessionmaker
from service.dicom.dataset_check import Header, Malformed, read_header
from service.dicom.sopclasses import IMAGE_CLASSES
from service.dicom.spool import Spool
from service.dicom.uid_keys import uid_key

log = logging.getLogger(__name__)

RECOVERED_AE = "(recovered)"  # calling AE of a registered orphan: the sender is not known
UNREADABLE, DUPLICATE = "orphan-unreadable", "orphan-duplicate"
_CHUNK = 500


@dataclass
class OrphanReport:
    """Counts and codes only: never a UID or any other value read from the files."""

    registered: list[int] = field(default_factory=list)  # new dicom_received_instances ids
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (quarantine name, code)
    left: int = 0  # could not be handled now (database down, no quarantine folder): next start


def find_orphans(spool: Spool, db_url: str) -> list[Path]:
    """Final-named spool files (``.part`` files are another matter) that no row names."""
    files = sorted(p for p in spool.root.glob("*.dcm") if p.is_file())
    known: set[str] = set()
    with get_sessionmaker(db_url)() as s:
        for i in range(0, len(files), _CHUNK):
            names = [str(p) for p in files[i:i + _CHUNK]]
            known.update(s.scalars(select(ReceivedInstance.spool_path)
                                   .where(ReceivedInstance.spool_path.in_(names))))
    return [p for p in files if str(p) not in known]


def recover_orphans(spool: Spool, *, db_url: str, keys: SiteKeys,
                    on_stored: Callable[[int], None] | None = None) -> OrphanReport:
    report = OrphanReport()
    try:
        orphans = find_orphans(spool, db_url)
    except SQLAlchemyError as exc:  # the files stay; the next start looks again
        log.warning("spool recovery skipped: database unavailable (%s)", type(exc).__name__)
        return report
    for path in orphans:
        try:
            _recover(spool, path, db_url=db_url, keys=keys, on_stored=on_stored, report=report)
        except (OSError, SQLAlchemyError) as exc:
            report.left += 1
            log.warning("spool recovery left an orphan in place (%s)", type(exc).__name__)
    if orphans:
        log.warning("spool recovery: %d orphan(s): %d registered, %d quarantined, %d left",
                    len(orphans), len(report.registered), len(report.quarantined), report.left)
    return report


def _recover(spool: Spool, path: Path, *, db_url: str, keys: SiteKeys,
             on_stored: Callable[[int], None] | None, report: OrphanReport) -> None:
    raw = path.read_bytes()
    try:
        header, ts = read_spooled(raw)
    except Malformed as exc:
        _quarantine(spool, path, UNREADABLE, f"not a readable DICOM instance ({exc})", report)
        return
    sop_key = uid_key(keys, header.sop_instance_uid)
    row = ReceivedInstance(
        sop_key=sop_key,
        series_key=uid_key(keys, header.series_uid),
        study_key=uid_key(keys, header.study_uid),
        sop_class_uid=header.sop_class_uid[:64],
        transfer_syntax=ts[:64],
        spool_path=str(path),
        node=spool.node,
        calling_ae=RECOVERED_AE,
        size_bytes=len(raw),
        status="received",
    )
    sessions = get_sessionmaker(db_url)
    try:
        with sessions() as s, s.begin():
            s.add(row)
    except IntegrityError:
        with sessions() as s:
            held = s.scalar(select(ReceivedInstance.spool_path)
                            .where(ReceivedInstance.sop_key == sop_key))
        if held is not None and Path(held).name == path.name:
            return  # registered meanwhile (another process's handler or recovery)
        _quarantine(spool, path, DUPLICATE,
                    "a second copy of an instance already received under another file", report)
        return
    report.registered.append(row.id)
    if on_stored is not None:
        try:
            on_stored(row.id)
        except Exception as exc:  # recorded as "received": the sweep links it later
            log.warning("on_stored hook failed for recovered instance %d (%s)", row.id,
                        type(exc).__name__)


def read_spooled(raw: bytes) -> tuple[Header, str]:
    """A spool file as the handler wrote it (preamble, file meta, dataset as received): the
    header, checked as the C-STORE handler checks an arriving dataset, and its transfer syntax.
    Raises ``Malformed`` (with a PHI-free message) for anything the handler would have refused."""
    fp = BytesIO(raw)
    try:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
    except Exception as exc:  # pydicom raises many types on garbage; all mean "cannot parse"
        raise Malformed(f"file meta unreadable ({type(exc).__name__})") from None
    ts = str(meta.get("TransferSyntaxUID", "") or "")
    if not ts:
        raise Malformed("no transfer syntax in the file meta")
    header = read_header(memoryview(raw)[fp.tell():], ts)
    if not (header.sop_class_uid and header.sop_instance_uid and header.study_uid
            and header.series_uid):
        raise Malformed("identifying UIDs missing")
    if header.sop_class_uid in IMAGE_CLASSES and not header.has_pixels:
        raise Malformed("an image without pixel data")
    stored_as = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
    if stored_as and stored_as != header.sop_instance_uid:
        raise Malformed("the file meta names another instance")
    return header, ts


def _quarantine(spool: Spool, path: Path, code: str, reason: str, report: OrphanReport) -> None:
    """Durably into quarantine under a random name, the reason file written first."""
    if spool.quarantine is None:
        report.left += 1
        log.warning("orphan spool file kept in place (%s): no quarantine folder", code)
        return
    spool.quarantine.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest = spool.quarantine / f"{uuid.uuid4().hex}.dcm"
    write_durably(dest.with_suffix(".json"), json.dumps({
        "code": code, "reason": reason, "source": "spool-recovery",
        "refused_at": datetime.now(UTC).isoformat(),
    }, indent=2).encode())
    move_durably(path, dest)
    report.quarantined.append((dest.name, code))
