"""A pynetdicom PACS for faults Orthanc cannot produce on demand: C-MOVE that drops the
association mid-way, a PACS that answers C-FIND but never sends, and a PACS that gives no
instance counts at study level. Everything else is tested against Orthanc."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, evt

from service.dicom.find import FIND as StudyRootQueryRetrieveInformationModelFind
from service.dicom.pull import MOVE as StudyRootQueryRetrieveInformationModelMove

Mode = Literal["normal", "drop-after-2-once", "never-send"]


@dataclass
class FakePacs:
    port: int
    ae_title: str
    mode: Mode
    move_requests: list[tuple[str, int]] = field(default_factory=list)  # (level, n UIDs)
    release: threading.Event = field(default_factory=threading.Event)


def _match(ds: Dataset, ident: Dataset) -> bool:
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "AccessionNumber"):
        want = ident.get(kw, None)
        if want in (None, ""):
            continue
        values = [str(v) for v in (want if not isinstance(want, str) else [want])]
        if str(ds.get(kw, "")) not in values:
            return False
    return True


@contextmanager
def fake_pacs(files: list[Path], *, destination: tuple[str, int], mode: Mode = "normal",
              ae_title: str = "FAKEPACS", study_counts: bool = True) -> Iterator[FakePacs]:
    datasets = [dcmread(f) for f in files]
    ae = AE(ae_title=ae_title)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    ae.network_timeout = ae.dimse_timeout = ae.acse_timeout = 10
    state = FakePacs(0, ae_title, mode)
    dropped = threading.Event()

    def on_find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        ident = event.identifier
        level = str(ident.QueryRetrieveLevel)
        seen: set[str] = set()
        for ds in datasets:
            if not _match(ds, ident):
                continue
            key = {"STUDY": ds.StudyInstanceUID, "SERIES": ds.SeriesInstanceUID}.get(
                level, ds.SOPInstanceUID)
            if key in seen:
                continue
            seen.add(key)
            out = Dataset()
            out.QueryRetrieveLevel = level
            out.StudyInstanceUID = ds.StudyInstanceUID
            if level == "STUDY":
                out.ModalitiesInStudy = "MG"
                if study_counts:
                    out.NumberOfStudyRelatedInstances = str(len(datasets))
            elif level == "SERIES":
                out.SeriesInstanceUID = ds.SeriesInstanceUID
                out.NumberOfSeriesRelatedInstances = str(sum(
                    d.SeriesInstanceUID == ds.SeriesInstanceUID for d in datasets))
            else:
                out.SeriesInstanceUID = ds.SeriesInstanceUID
                out.SOPInstanceUID = ds.SOPInstanceUID
            yield 0xFF00, out

    def on_move(event: Any) -> Iterator[Any]:
        ident = event.identifier
        sops = ident.get("SOPInstanceUID", None)
        n = 0 if sops in (None, "") else (1 if isinstance(sops, str) else len(sops))
        state.move_requests.append((str(ident.QueryRetrieveLevel), n))
        yield destination
        matches = [d for d in datasets if _match(d, ident)]
        if state.mode == "never-send":
            state.release.wait(60)  # a PACS that accepted the move and went silent
            yield 0
            return
        yield len(matches)
        for i, ds in enumerate(matches):
            if state.mode == "drop-after-2-once" and i == 2 and not dropped.is_set():
                dropped.set()
                event.assoc.abort()
                return
            yield 0xFF00, ds

    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[
        (evt.EVT_C_FIND, on_find), (evt.EVT_C_MOVE, on_move)])
    assert server is not None
    state.port = int(server.server_address[1])
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
