"""A small sample PACS for ``deidgate demo`` and tests: C-ECHO, C-FIND and C-MOVE (pynetdicom SCP)
over synthetic screening exams kept in a folder.

It answers study, series and image level queries (with the instance counts a real PACS gives)
and moves a study, series or single instances to a destination AE it knows, like Orthanc does.
The exams are synthetic (service.sample.synthetic): invented women, no real data.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

log = logging.getLogger(__name__)
logging.getLogger("pynetdicom").setLevel(logging.WARNING)


@dataclass
class _Instance:
    path: Path
    sop_uid: str
    sop_class: str
    series_uid: str


@dataclass
class _Study:
    uid: str
    attrs: dict[str, str]
    modalities: set[str] = field(default_factory=set)
    instances: list[_Instance] = field(default_factory=list)


def _match(value: str, query: Any) -> bool:
    """DICOM matching for the keys we support: universal, single value, date range, list."""
    q = "" if query is None else str(query)
    if q in ("", "*"):
        return True
    if "-" in q and len(q) == 17 and q.replace("-", "").isdigit():  # date range
        lo, hi = q.split("-")
        return lo <= value <= hi
    if q.startswith("-") or q.endswith("-"):
        lo, hi = (q[:-1], "99999999") if q.endswith("-") else ("00000000", q[1:])
        return lo <= value <= hi
    if "\\" in q:
        return value in q.split("\\")
    return value == q


class SamplePacs:
    def __init__(self, folder: Path, *, ae_title: str = "SAMPLEPACS", host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.folder = Path(folder)
        self.ae_title = ae_title
        self.host = host
        self.port = port
        self.destinations: dict[str, tuple[str, int]] = {}
        self.studies: dict[str, _Study] = {}
        self._server: Any = None
        self._lock = threading.Lock()
        self.reload()

    def reload(self) -> int:
        studies: dict[str, _Study] = {}
        for p in sorted(self.folder.rglob("*.dcm")):
            ds = dcmread(p, stop_before_pixels=True)
            st = studies.setdefault(str(ds.StudyInstanceUID), _Study(
                uid=str(ds.StudyInstanceUID),
                attrs={k: str(ds.get(k, "") or "") for k in (
                    "PatientID", "PatientName", "AccessionNumber", "StudyDate", "StudyTime",
                    "StudyDescription", "PatientBirthDate", "StudyID")}))
            st.modalities.add(str(ds.get("Modality", "") or ""))
            st.instances.append(_Instance(p, str(ds.SOPInstanceUID), str(ds.SOPClassUID),
                                          str(ds.SeriesInstanceUID)))
        with self._lock:
            self.studies = studies
        return len(studies)

    def add_destination(self, ae_title: str, host: str, port: int) -> None:
        self.destinations[ae_title.strip()] = (host, port)

    # --- C-FIND ---------------------------------------------------------------------------

    def _find(self, q: Dataset) -> Iterator[Dataset]:
        level = str(q.get("QueryRetrieveLevel", "STUDY"))
        for st in list(self.studies.values()):
            if not all(_match(st.attrs.get(k, ""), q.get(k)) for k in (
                    "PatientID", "AccessionNumber", "StudyDate") if k in q):
                continue
            if "StudyInstanceUID" in q and not _match(st.uid, q.StudyInstanceUID):
                continue
            mods = q.get("ModalitiesInStudy")
            if mods and not any(_match(m, mods) for m in st.modalities):
                continue
            if level == "STUDY":
                r = Dataset()
                r.QueryRetrieveLevel = "STUDY"
                for k in q.dir():
                    if k in st.attrs:
                        setattr(r, k, st.attrs[k])
                r.StudyInstanceUID = st.uid
                r.ModalitiesInStudy = sorted(st.modalities)
                r.NumberOfStudyRelatedInstances = len(st.instances)
                r.NumberOfStudyRelatedSeries = len({i.series_uid for i in st.instances})
                yield r
            elif level == "SERIES":
                for ser in sorted({i.series_uid for i in st.instances}):
                    if "SeriesInstanceUID" in q and not _match(ser, q.SeriesInstanceUID):
                        continue
                    r = Dataset()
                    r.QueryRetrieveLevel = "SERIES"
                    r.StudyInstanceUID, r.SeriesInstanceUID = st.uid, ser
                    r.Modality = sorted(st.modalities)[0] if st.modalities else ""
                    r.NumberOfSeriesRelatedInstances = sum(
                        1 for i in st.instances if i.series_uid == ser)
                    yield r
            elif level == "IMAGE":
                for i in st.instances:
                    if "SeriesInstanceUID" in q and not _match(i.series_uid,
                                                               q.SeriesInstanceUID):
                        continue
                    if "SOPInstanceUID" in q and not _match(i.sop_uid, q.SOPInstanceUID):
                        continue
                    r = Dataset()
                    r.QueryRetrieveLevel = "IMAGE"
                    r.StudyInstanceUID, r.SeriesInstanceUID = st.uid, i.series_uid
                    r.SOPInstanceUID, r.SOPClassUID = i.sop_uid, i.sop_class
                    yield r

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        for r in self._find(event.identifier):
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, r
        yield 0x0000, None

    # --- C-MOVE ---------------------------------------------------------------------------

    def _selected(self, q: Dataset) -> list[_Instance]:
        uids = q.get("StudyInstanceUID")
        out = []
        for st in list(self.studies.values()):
            if not _match(st.uid, uids) or not uids:
                continue
            for i in st.instances:
                if "SeriesInstanceUID" in q and q.SeriesInstanceUID and not _match(
                        i.series_uid, q.SeriesInstanceUID):
                    continue
                if "SOPInstanceUID" in q and q.SOPInstanceUID and not _match(
                        i.sop_uid, q.SOPInstanceUID):
                    continue
                out.append(i)
        return out

    def _on_move(self, event: Any) -> Iterator[Any]:
        dest = self.destinations.get(str(event.move_destination).strip())
        if dest is None:
            yield None, None  # 0xA801 move destination unknown
            return
        yield dest[0], dest[1], {"contexts": [c for c in StoragePresentationContexts]}
        selected = self._selected(event.identifier)
        yield len(selected)
        for inst in selected:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, dcmread(inst.path)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> SamplePacs:
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(Verification)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
        ae.maximum_pdu_size = 1 << 20
        self._server = ae.start_server(
            (self.host, self.port), block=False,
            evt_handlers=[(evt.EVT_C_FIND, self._on_find), (evt.EVT_C_MOVE, self._on_move),
                          (evt.EVT_C_ECHO, lambda e: 0x0000)])
        self.port = int(self._server.server_address[1])
        log.info("sample PACS %s on %s:%d with %d studies", self.ae_title, self.host, self.port,
                 len(self.studies))
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> SamplePacs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def populate(folder: Path, n_exams: int, *, burned_in_every: int = 3, **kwargs: Any) -> list[str]:
    """Write ``n_exams`` synthetic 4-view exams (some with burned-in text) unless present;
    returns their accession numbers (synthetic values, used to queue the demo job)."""
    from service.sample.synthetic import default_identity, write_exam

    folder.mkdir(parents=True, exist_ok=True)
    accessions = []
    for n in range(n_exams):
        ident = default_identity(n)
        accessions.append(ident.accession_number)
        sub = folder / f"exam{n:04d}"
        if sub.exists() and len(list(sub.glob("*.dcm"))) >= 4:
            continue
        text = None
        if burned_in_every and n % burned_in_every == 0:
            text = ident.patient_name.split("^")[0]  # the family name, as units burn it in
        write_exam(sub, identity=ident, burned_in_text=text, **kwargs)
    return accessions
