"""The one C-STORE code path: used by the listener (C-MOVE deliveries, pushes) and by C-GET.

Thin by design: check the bytes cheaply, write them durably to the spool exactly as received
(no decoding, no decompression), record the instance under keyed hashes, call the injected
``on_stored`` hook (the jobs area queues de-identification there), and only then answer success.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from service.audit.atna_export import AssociationTally
from service.core import logs, metrics
from service.core.keys import SiteKeys
from service.db.models.dicom import ReceivedInstance
from service.db.session import get_sessionmaker
from service.db.states import ReceivedStatus
from service.dicom.dataset_check import MAX_INFLATED_BYTES, Malformed, read_header
from service.dicom.elements import part10_prefix
from service.dicom.receive_stream import StreamWriter
from service.dicom.sopclasses import IMAGE_CLASSES
from service.dicom.spool import Spool, SpoolFull
from service.dicom.uid_keys import uid_key

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
SOP_CLASS_NOT_SUPPORTED = 0x0122

OnStored = Callable[[int], None]


class StoreSink:
    """Receives C-STORE requests into the spool; safe to share between association threads."""

    def __init__(self, *, db_url: str, keys: SiteKeys, spool: Spool,
                 on_stored: OnStored | None = None, stream: StreamWriter | None = None,
                 max_inflated: int = MAX_INFLATED_BYTES) -> None:
        self.db_url = db_url
        self.max_inflated = max_inflated
        self.stream = stream
        self.keys = keys
        self.spool = spool
        self.on_stored = on_stored
        # The received-instance row commits without waiting for the disk (SQLite NORMAL,
        # PostgreSQL synchronous_commit off; service.db.session): the sender hears success only
        # after the spool file itself is fsynced, and if a power cut loses the row, start-up
        # orphan recovery (service.dicom.orphans) registers that file again. One fsync less on
        # every instance's way in, and a shorter hold of SQLite's write lock.
        self._sessions = get_sessionmaker(db_url, False)
        self.tally = AssociationTally()  # ATNA: instances received, per association and study

    def association_ended(self, event: Any) -> None:
        """EVT_RELEASED / EVT_ABORTED: one ATNA Instances Transferred message per study."""
        try:
            self.tally.ended(event.assoc, ok=event.event.name != "EVT_ABORTED")
        except Exception as exc:  # auditing must never break an association's end
            log.error("ATNA tally failed at association end (%s)", logs.failure(exc))

    def handle_store(self, event: Any) -> int:
        """pynetdicom EVT_C_STORE handler; returns the precise DIMSE status."""
        try:
            return self._store(event)
        except Exception as exc:  # never let the library answer a vague 0xC211
            log.error("C-STORE failed unexpectedly (%s)", logs.failure(exc))  # never its text
            return OUT_OF_RESOURCES

    def _store(self, event: Any) -> int:
        req = event.request
        sop_class = str(req.AffectedSOPClassUID)
        calling = event.assoc.requestor.ae_title.strip()
        stream: BytesIO = req.DataSet
        data = stream.getbuffer()
        part = self.stream.take(event.assoc, str(req.AffectedSOPInstanceUID)) \
            if self.stream is not None else None
        committed_part = False
        try:
            ts = str(event.context.transfer_syntax)
            try:
                header = read_header(data, ts, max_inflated=self.max_inflated)
            except Malformed as exc:
                log.warning("refused C-STORE from %s: malformed dataset (%s)", calling, exc)
                return CANNOT_UNDERSTAND
            if (header.sop_class_uid != sop_class
                    or header.sop_instance_uid != str(req.AffectedSOPInstanceUID)
                    or not header.study_uid or not header.series_uid
                    or (sop_class in IMAGE_CLASSES and not header.has_pixels)):
                log.warning("refused C-STORE from %s: dataset does not match its SOP class",
                            calling)
                return DATASET_MISMATCH
            sop_key = uid_key(self.keys, header.sop_instance_uid)
            if self._known(sop_key):
                return SUCCESS  # idempotent: already durable, no second file
            streamed = part is not None and part.complete and \
                part.size == part.meta_len + len(data)
            try:
                self.spool.check_room(0 if streamed else len(data) + 512)
            except SpoolFull:
                log.warning("refused C-STORE from %s: spool below free-space floor", calling)
                return OUT_OF_RESOURCES
            if streamed and part is not None:  # already written while it arrived
                fd, part.fd = part.fd, -1
                committed_part = True
                path, size = self.spool.commit_part(part.path, fd), part.size
            else:
                meta = part10_prefix(event.file_meta)
                path, size = self.spool.write((meta, data))
        finally:
            data.release()
            if part is not None and not committed_part:  # never leave it behind
                part.close()
                self.spool.discard(part.path)
        row = ReceivedInstance(
            sop_key=sop_key,
            series_key=uid_key(self.keys, header.series_uid),
            study_key=uid_key(self.keys, header.study_uid),
            sop_class_uid=sop_class,
            transfer_syntax=ts,
            spool_path=str(path),
            node=self.spool.node,
            calling_ae=calling[:16],
            size_bytes=size,
            status=ReceivedStatus.RECEIVED,
        )
        try:
            with self._sessions() as s, s.begin():
                s.add(row)
        except IntegrityError:  # the same instance arrived on another association meanwhile
            if not self._row_names(sop_key, path):  # (or start-up recovery registered this file)
                self.spool.discard(path)
            return SUCCESS
        except SQLAlchemyError:
            self.spool.discard(path)
            log.warning("refused C-STORE from %s: database unavailable", calling)
            return OUT_OF_RESOURCES
        metrics.count_received()
        if getattr(event.assoc, "is_acceptor", False):  # C-GET: audited as a retrieval
            self.tally.add(event.assoc, calling_ae=calling,
                           peer_host=str(event.assoc.requestor.address),
                           study_key=row.study_key, sop_class=sop_class)
        if self.on_stored is not None:
            try:
                self.on_stored(row.id)
            except Exception as exc:  # durable and recorded as "received": a sweep re-queues it
                log.error("on_stored hook failed for instance %d (%s)", row.id, logs.failure(exc))
        return SUCCESS

    def _row_names(self, sop_key: str, path: Path) -> bool:
        with self._sessions() as s:
            return s.scalar(select(ReceivedInstance.spool_path).where(
                ReceivedInstance.sop_key == sop_key)) == str(path)

    def _known(self, sop_key: str) -> bool:
        with self._sessions() as s:
            return s.scalar(select(ReceivedInstance.id).where(
                ReceivedInstance.sop_key == sop_key)) is not None
