"""A small sample PACS for ``deidgate demo`` and the tests: C-ECHO, C-FIND and C-MOVE
(pynetdicom SCP) over synthetic screening exams kept in files.

``Catalogue`` answers study, series and image level queries (with the instance counts a real
PACS gives) and selects what a C-MOVE asks for (a study, series or single instances), with
DICOM matching for the keys it supports. ``SamplePacs`` serves a catalogue and moves to the
destination AEs it knows, like Orthanc does; the tests' fault PACS (tests/peers/fakepacs.py)
is a ``SamplePacs`` that misbehaves on purpose. The exams are synthetic: invented women.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, build_context, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from synthetic.exam import write_exam
from synthetic.identity import default_identity

log = logging.getLogger(__name__)
logging.getLogger("pynetdicom").setLevel(logging.WARNING)

_STUDY_ATTRS = ("PatientID", "PatientName", "AccessionNumber", "StudyDate", "StudyTime",
                "StudyDescription", "PatientBirthDate", "StudyID")


@dataclass
class Instance:
    path: Path
    sop_uid: str
    sop_class: str
    series_uid: str
    transfer_syntax: str


@dataclass
class Study:
    uid: str
    attrs: dict[str, str]
    modalities: set[str] = field(default_factory=set)
    instances: list[Instance] = field(default_factory=list)

    @property
    def series(self) -> list[str]:
        return sorted({i.series_uid for i in self.instances})


def match(value: str, query: Any) -> bool:
    """DICOM matching for the keys we support: universal, single value, date range, a list of
    values (multi-valued element or backslash-separated)."""
    if query is not None and not isinstance(query, str | bytes) and isinstance(query, Iterable):
        return value in [str(q) for q in query]
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


class Catalogue:
    """What a PACS holds, indexed by study, read once from the files' headers."""

    def __init__(self, files: Iterable[Path]) -> None:
        self.studies: dict[str, Study] = {}
        for p in files:
            ds = dcmread(p, stop_before_pixels=True)
            st = self.studies.setdefault(str(ds.StudyInstanceUID), Study(
                uid=str(ds.StudyInstanceUID),
                attrs={k: str(ds.get(k, "") or "") for k in _STUDY_ATTRS}))
            st.modalities.add(str(ds.get("Modality", "") or ""))
            st.instances.append(Instance(p, str(ds.SOPInstanceUID), str(ds.SOPClassUID),
                                         str(ds.SeriesInstanceUID),
                                         str(ds.file_meta.TransferSyntaxUID)))

    @classmethod
    def from_folder(cls, folder: Path) -> Catalogue:
        return cls(sorted(Path(folder).rglob("*.dcm")))

    def _studies(self, q: Dataset) -> Iterator[Study]:
        for st in list(self.studies.values()):
            if not all(match(st.attrs.get(k, ""), q.get(k)) for k in (
                    "PatientID", "AccessionNumber", "StudyDate") if k in q):
                continue
            if "StudyInstanceUID" in q and not match(st.uid, q.StudyInstanceUID):
                continue
            mods = q.get("ModalitiesInStudy")
            if mods and not any(match(m, mods) for m in st.modalities):
                continue
            yield st

    def find(self, q: Dataset) -> Iterator[Dataset]:
        """C-FIND answers at the query's level."""
        level = str(q.get("QueryRetrieveLevel", "STUDY"))
        for st in self._studies(q):
            if level == "STUDY":
                r = Dataset()
                r.QueryRetrieveLevel = "STUDY"
                for k in q.dir():
                    if k in st.attrs:
                        setattr(r, k, st.attrs[k])
                r.StudyInstanceUID = st.uid
                r.ModalitiesInStudy = sorted(st.modalities)
                r.NumberOfStudyRelatedInstances = len(st.instances)
                r.NumberOfStudyRelatedSeries = len(st.series)
                yield r
            elif level == "SERIES":
                for ser in st.series:
                    if "SeriesInstanceUID" in q and not match(ser, q.SeriesInstanceUID):
                        continue
                    r = Dataset()
                    r.QueryRetrieveLevel = "SERIES"
                    r.StudyInstanceUID, r.SeriesInstanceUID = st.uid, ser
                    r.Modality = sorted(st.modalities)[0] if st.modalities else ""
                    r.NumberOfSeriesRelatedInstances = sum(
                        1 for i in st.instances if i.series_uid == ser)
                    yield r
            elif level == "IMAGE":
                for i in self._instances(st, q):
                    r = Dataset()
                    r.QueryRetrieveLevel = "IMAGE"
                    r.StudyInstanceUID, r.SeriesInstanceUID = st.uid, i.series_uid
                    r.SOPInstanceUID, r.SOPClassUID = i.sop_uid, i.sop_class
                    yield r

    @staticmethod
    def _instances(st: Study, q: Dataset) -> Iterator[Instance]:
        for i in st.instances:
            if q.get("SeriesInstanceUID") and not match(i.series_uid, q.SeriesInstanceUID):
                continue
            if q.get("SOPInstanceUID") and not match(i.sop_uid, q.SOPInstanceUID):
                continue
            yield i

    def selected(self, q: Dataset) -> list[Instance]:
        """What a C-MOVE identifier asks for (a study UID is required)."""
        if not q.get("StudyInstanceUID"):
            return []
        return [i for st in self._studies(q) for i in self._instances(st, q)]


class SamplePacs:
    """Serves a catalogue; moves to the AE titles registered with ``add_destination``."""

    def __init__(self, source: Path | list[Path], *, ae_title: str = "SAMPLEPACS",
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.source = source
        self.ae_title = ae_title
        self.host = host
        self.port = port
        self.destinations: dict[str, tuple[str, int]] = {}
        self.catalogue = Catalogue([])
        self._server: Any = None
        self.reload()

    @property
    def studies(self) -> dict[str, Study]:
        return self.catalogue.studies

    def reload(self) -> int:
        self.catalogue = (Catalogue(self.source) if isinstance(self.source, list)
                          else Catalogue.from_folder(self.source))
        return len(self.catalogue.studies)

    def add_destination(self, ae_title: str, host: str, port: int) -> None:
        self.destinations[ae_title.strip()] = (host, port)

    def destination(self, ae_title: str) -> tuple[str, int] | None:
        return self.destinations.get(ae_title.strip())

    # --- event handlers (subclasses misbehave here) -----------------------------------------

    def on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        for r in self.catalogue.find(event.identifier):
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, r
        yield 0x0000, None

    def on_move(self, event: Any) -> Iterator[Any]:
        dest = self.destination(str(event.move_destination))
        if dest is None:
            yield None, None  # 0xA801 move destination unknown
            return
        selected = self.catalogue.selected(event.identifier)
        yield dest[0], dest[1], {"contexts": self.contexts(selected)}
        yield len(selected)
        for inst in selected:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, dcmread(inst.path)

    @staticmethod
    def contexts(selected: list[Instance]) -> list[Any]:
        """One context per SOP class and stored syntax: the files are sent as they are."""
        pairs = sorted({(i.sop_class, i.transfer_syntax) for i in selected})
        return [build_context(c, ts) for c, ts in pairs][:128]

    # --- lifecycle ------------------------------------------------------------------------

    def make_ae(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(Verification)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
        ae.maximum_pdu_size = 1 << 20
        return ae

    def start(self) -> SamplePacs:
        self._server = self.make_ae().start_server(
            (self.host, self.port), block=False,
            evt_handlers=[(evt.EVT_C_FIND, self.on_find), (evt.EVT_C_MOVE, self.on_move),
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
