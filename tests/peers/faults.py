"""pynetdicom peers for faults no real sender produces on demand: raw (malformed) dataset bytes,
an association aborted mid-dataset, a sender that stalls mid-dataset."""

from __future__ import annotations

import time
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID
from pynetdicom import AE, _config
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE


def _assoc(port: int, sop_class: str, ts: str, calling: str, called: str,
           max_pdu: int = 16_384) -> Any:
    ae = AE(ae_title=calling)
    ae.maximum_pdu_size = max_pdu
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    ae.add_requested_context(sop_class, [ts])
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        raise RuntimeError("association not established")
    return assoc


def encoded_dataset(path: Path) -> tuple[bytes, str, str, str]:
    """(dataset bytes without file meta, SOP class, SOP instance, transfer syntax)."""
    ds = dcmread(path)
    ts = ds.file_meta.TransferSyntaxUID
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, ts.is_implicit_VR
    write_dataset(buf, ds)
    return buf.getvalue(), str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ts)


def send_raw(port: int, raw: bytes, *, sop_class: str, sop_instance: str, ts: str,
             tmp: Path, calling: str = "FAULTY", called: str = "DEIDGATE") -> int | None:
    """Send ``raw`` as the dataset of a C-STORE, byte for byte; returns the status."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(ts)
    path = tmp / "raw.dcm"
    with path.open("wb") as f:
        f.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(f, meta)  # type: ignore[arg-type]
        f.write(raw)
    assoc = _assoc(port, sop_class, ts, calling, called)
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes without re-encoding
    try:
        status = assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old
        assoc.release()
    return int(status.Status) if status is not None and "Status" in status else None


def send_partial(port: int, path: Path, *, fraction: float = 0.5, then: str = "abort",
                 stall_s: float = 0.0, calling: str = "FAULTY",
                 called: str = "DEIDGATE") -> Any:
    """Send the first ``fraction`` of a C-STORE's P-DATA PDUs, then abort (or stall)."""
    raw, sop_class, sop_instance, ts = encoded_dataset(path)
    assoc = _assoc(port, sop_class, ts, calling, called)
    cx = next(c for c in assoc.accepted_contexts if c.abstract_syntax == sop_class)
    req = C_STORE()
    req.MessageID = 1
    req.AffectedSOPClassUID = sop_class
    req.AffectedSOPInstanceUID = sop_instance
    req.Priority = 2
    req.DataSet = BytesIO(raw)
    msg = C_STORE_RQ()
    msg.primitive_to_message(req)
    pdus = list(msg.encode_msg(cx.context_id, 16_384))  # small PDUs: many to cut between
    for p in pdus[: max(2, int(len(pdus) * fraction))]:
        assoc.dul.send_pdu(p)
    if then == "abort":
        time.sleep(0.3)
        assoc.abort()
    else:
        deadline = time.monotonic() + stall_s
        while time.monotonic() < deadline and assoc.is_established:
            time.sleep(0.05)
    return assoc
