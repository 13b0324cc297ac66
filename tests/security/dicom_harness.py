"""A pynetdicom SCP wired with service.dicom.tls exactly as the gateway's listener will be
(``TlsAssociationServer`` + ``TlsGuard`` in EVT_REQUESTED), and dcmtk's TLS command lines."""

from __future__ import annotations

import secrets
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from service.dicom.tls import NodeTls, Refusal, TlsGuard
from service.dicom.tls_server import TlsAssociationServer
from tests.peers.certs import Leaf

ALL_TS = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
MG_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"


@dataclass
class Exam:
    study_uid: str
    files: list[Path]
    sop_uids: list[str]


def small_exam(folder: Path, views: int = 2) -> Exam:
    """A tiny synthetic mammography study (8x8 pixels per view): enough for transport tests,
    and independent of the sample-data helpers the restructure moves."""
    folder.mkdir(parents=True, exist_ok=True)
    study, patient = generate_uid(), f"SYN{secrets.token_hex(3)}"
    exam = Exam(study, [], [])
    for i in range(views):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = UID(MG_PRESENTATION)
        ds.SOPClassUID = MG_PRESENTATION
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PatientName, ds.PatientID = "Synthetic^Patient", patient
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MG", i + 1, 1
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260105", "1015", "", "1"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = 8
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = bytes(range(128))
        path = folder / f"view{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        exam.files.append(path)
        exam.sop_uids.append(str(ds.SOPInstanceUID))
    return exam


@dataclass
class Scp:
    port: int
    refusals: list[Refusal] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)
    echoes: int = 0

    def wait_refusal(self, timeout: float = 10.0) -> Refusal:
        deadline = time.monotonic() + timeout
        while not self.refusals:
            if time.monotonic() > deadline:
                raise TimeoutError("no refusal recorded")
            time.sleep(0.02)
        return self.refusals[-1]


@contextmanager
def tls_scp(ssl_context: ssl.SSLContext | None, policies: Mapping[str, NodeTls], *,
            pins: Callable[[], Mapping[str, str]] = dict, handshake_timeout: float = 5.0,
            ae_title: str = "DEIDGATE") -> Iterator[Scp]:
    """``ssl_context=None``: the plain port, where the guard still applies each node's policy."""
    ae = AE(ae_title=ae_title)
    ae.require_called_aet = False
    ae.add_supported_context(Verification)
    ae.add_supported_context(MG_PRESENTATION, ALL_TS)
    guard = TlsGuard(policies.get, pins)
    scp = Scp(port=0)

    def on_requested(event: Any) -> None:
        refusal = guard.check(event.assoc)
        if refusal is not None:
            scp.refusals.append(refusal)  # recorded before the peer is answered
            guard.reject(event.assoc, refusal)

    def on_echo(event: Any) -> int:
        scp.echoes += 1
        return 0x0000

    def on_store(event: Any) -> int:
        scp.stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    handlers = [(evt.EVT_REQUESTED, on_requested), (evt.EVT_C_ECHO, on_echo),
                (evt.EVT_C_STORE, on_store)]
    if ssl_context is None:
        server: ThreadedAssociationServer = ae.make_server(
            ("127.0.0.1", 0), evt_handlers=handlers, server_class=ThreadedAssociationServer)
    else:
        server = ae.make_server(("127.0.0.1", 0), evt_handlers=handlers,
                                ssl_context=ssl_context, server_class=TlsAssociationServer,
                                on_refused=scp.refusals.append,
                                handshake_timeout=handshake_timeout)
    scp.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ae._servers.append(server)  # as AE.start_server does; server.shutdown() removes it
    try:
        yield scp
    finally:
        server.shutdown()
        thread.join(10)


def tls_options(leaf: Leaf | None, ca: Path) -> list[str]:
    """dcmtk's TLS options: our key and certificate (or anonymous TLS), trusting ``ca``."""
    if leaf is None:
        return ["+tla", "+cf", str(ca)]
    return ["+tls", str(leaf.key), str(leaf.cert), "+cf", str(ca)]


def echoscu(port: int, tls: Sequence[str], *, calling: str = "MODALITY",
            called: str = "DEIDGATE") -> subprocess.CompletedProcess[str]:
    cmd = ["echoscu", "-aet", calling, "-aec", called, "-to", "10", "-ta", "10", "-td", "10",
           *tls, "127.0.0.1", str(port)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False,
                          stdin=subprocess.DEVNULL)


def storescu(port: int, tls: Sequence[str], files: Sequence[Path], *,
             calling: str = "MODALITY") -> subprocess.CompletedProcess[str]:
    cmd = ["storescu", "-aet", calling, "-aec", "DEIDGATE", "-to", "10", "-ta", "10",
           "-td", "30", *tls, "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL)
