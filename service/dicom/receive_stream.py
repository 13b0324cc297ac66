"""Write each C-STORE's bytes to a spool ``.part`` file while its PDUs arrive.

Why: the sender hears "stored" only after an fsync, and flushing 27 MB only at the end put the
disk write in series with the network. Written as it arrives (with Linux writeback started every
few MiB), the final fsync has almost nothing left to do. pynetdicom still assembles the dataset
in memory; the handler checks it and that the ``.part`` file holds exactly those bytes, then
fsyncs and renames it (``Spool.commit_part``). Anything not claimed by a handler (abort,
refusal, a dropped connection) is deleted when the association ends.

Wired through pynetdicom notification events (``EVT_PDU_RECV``, ``EVT_CONN_CLOSE``) of our own
AE only: no process-wide switch such as ``_config.STORE_RECV_CHUNKED_DATASET``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from pynetdicom.dsutils import create_file_meta, decode
from pynetdicom.pdu import P_DATA_TF

from service.dicom.elements import part10_prefix
from service.dicom.spool import Spool, SpoolFull

log = logging.getLogger(__name__)

_WRITEBACK_EVERY = 4 << 20
_SYNC_FILE_RANGE_WRITE = 2
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _sfr: Any = _libc.sync_file_range
    _sfr.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
except (OSError, AttributeError):  # not Linux: the final fsync does all the work
    _sfr = None


@dataclass
class PartFile:
    """A spool file being written; ``size`` counts the bytes written so far."""

    path: Path
    fd: int
    meta_len: int
    size: int = 0
    complete: bool = False
    _flushed: int = 0

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.size += n
        if _sfr is not None and self.size - self._flushed >= _WRITEBACK_EVERY:
            _sfr(self.fd, self._flushed, self.size - self._flushed, _SYNC_FILE_RANGE_WRITE)
            self._flushed = self.size

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1


@dataclass
class _AssocState:
    command: bytearray = field(default_factory=bytearray)
    current: tuple[str, PartFile] | None = None
    finished: dict[str, PartFile] = field(default_factory=dict)  # SOP instance UID -> part


class StreamWriter:
    """One per listener; its handlers run on each association's DUL thread."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._states: dict[int, _AssocState] = {}
        self._lock = threading.Lock()

    def handlers(self) -> list[tuple[Any, Any]]:
        from pynetdicom import evt

        return [(evt.EVT_PDU_RECV, self.on_pdu), (evt.EVT_CONN_CLOSE, self.on_end),
                (evt.EVT_ABORTED, self.on_end)]

    def _state(self, assoc: Any) -> _AssocState:
        with self._lock:
            return self._states.setdefault(id(assoc), _AssocState())

    def on_pdu(self, event: Any) -> None:
        pdu = event.pdu
        if not isinstance(pdu, P_DATA_TF):
            return
        st = self._state(event.assoc)
        for item in pdu.presentation_data_value_items:
            data = item.presentation_data_value
            if not data:
                continue
            header = data[0]
            if header & 1:  # command fragment
                st.command.extend(data[1:])
                if header & 2:
                    self._begin(event.assoc, st, int(item.presentation_context_id or 0))
            elif st.current is not None:
                uid, part = st.current
                try:
                    part.write(memoryview(data)[1:])
                except OSError:  # disk full or gone: the handler decides from memory
                    log.warning("streaming write failed; the C-STORE handler will decide")
                    self._discard(part)
                    st.current = None
                    continue
                if header & 2:
                    part.complete = True
                    old = st.finished.pop(uid, None)
                    if old is not None:
                        self._discard(old)
                    st.finished[uid] = part
                    st.current = None

    def _begin(self, assoc: Any, st: _AssocState, context_id: int) -> None:
        cmd = decode(BytesIO(bytes(st.command)), True, True)
        st.command.clear()
        if st.current is not None:  # a new message before the last dataset ended
            self._discard(st.current[1])
            st.current = None
        if cmd.get("CommandField") != 0x0001 or cmd.get("CommandDataSetType") == 0x0101:
            return
        cx = assoc._accepted_cx.get(context_id)
        if cx is None:
            return
        try:
            self.spool.check_room(0)
        except SpoolFull:
            return  # the handler answers 0xA700; nothing written
        uid = str(cmd.AffectedSOPInstanceUID)
        meta = part10_prefix(create_file_meta(
            sop_class_uid=cmd.AffectedSOPClassUID, sop_instance_uid=cmd.AffectedSOPInstanceUID,
            transfer_syntax=cx.transfer_syntax[0]))
        path, fd = self.spool.open_part()
        part = PartFile(path, fd, len(meta))
        try:
            part.write(meta)
        except OSError:
            self._discard(part)
            return
        st.current = (uid, part)

    def take(self, assoc: Any, sop_instance_uid: str) -> PartFile | None:
        """The complete part file of this instance, now owned by the caller."""
        with self._lock:
            st = self._states.get(id(assoc))
        if st is None:
            return None
        return st.finished.pop(sop_instance_uid, None)

    def _discard(self, part: PartFile) -> None:
        part.close()
        self.spool.discard(part.path)

    def on_end(self, event: Any) -> None:
        with self._lock:
            st = self._states.pop(id(event.assoc), None)
        if st is None:
            return
        if st.current is not None:
            self._discard(st.current[1])
        for part in st.finished.values():
            self._discard(part)
