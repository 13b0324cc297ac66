"""C-FIND: resolve a job's request to studies, with the instance count each should have.

One query per requested value (accession number, patient ID, study UID, or a date range with a
modality), results de-duplicated. Where the PACS gives no study-level count, the series level
is asked, then the instance level: completeness (``service.dicom.pull``) needs the number.
Results hold the original UIDs (needed to C-MOVE) but never show them in a repr.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from pydicom.dataset import Dataset

from service.core.keys import SiteKeys
from service.dicom.admin import NodeConfig
from service.dicom.scu import PENDING, PacsError, Timeouts, association, silent_peer
from service.dicom.uid_keys import uid_key

log = logging.getLogger(__name__)

FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND


# --- requests and results (no original identifiers in any repr) ---------------------------

@dataclass(frozen=True)
class RetrieveRequest:
    accession_numbers: tuple[str, ...] = field(default=(), repr=False)
    patient_ids: tuple[str, ...] = field(default=(), repr=False)
    study_uids: tuple[str, ...] = field(default=(), repr=False)
    date_from: date | None = None
    date_to: date | None = None
    modality: str | None = None

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> RetrieveRequest:
        """Accepts the jobs area's request dict (``query: {date_from, date_to, modality}``)."""
        q = m.get("query") or {}
        def _d(v: Any) -> date | None:
            return None if v in (None, "") else v if isinstance(v, date) else date.fromisoformat(
                str(v))
        return cls(
            accession_numbers=tuple(m.get("accession_numbers") or ()),
            patient_ids=tuple(m.get("patient_ids") or ()),
            study_uids=tuple(m.get("study_instance_uids") or m.get("study_uids") or ()),
            date_from=_d(q.get("date_from", m.get("date_from"))),
            date_to=_d(q.get("date_to", m.get("date_to"))),
            modality=q.get("modality", m.get("modality")) or (
                "MG" if q or m.get("date_from") else None),
        )

    def __repr__(self) -> str:
        return (f"RetrieveRequest(accessions={len(self.accession_numbers)}, "
                f"patient_ids={len(self.patient_ids)}, study_uids={len(self.study_uids)}, "
                f"dates={self.date_from}..{self.date_to}, modality={self.modality})")


@dataclass
class SeriesMatch:
    series_uid: str = field(repr=False)
    series_key: str = ""
    expected: int | None = None
    modality: str = ""
    sop_class: str = ""  # where the PACS returns one at series level (not all do)


@dataclass(frozen=True)
class SeriesFilter:
    """Which series of a study a retrieval moves: the PACS and the network are spared objects
    the policy would only refuse. ``modalities`` None: any modality; ``sop_classes`` None: any
    class (a series is judged by its class only where the PACS returns one). ``source`` names
    who decided, for the skip reason (a policy name, or the job's ``modalities`` option)."""

    modalities: frozenset[str] | None = None
    sop_classes: frozenset[str] | None = None
    refused_classes: frozenset[str] = frozenset()
    source: str = ""

    def skip_reason(self, series: SeriesMatch) -> str | None:
        """Why this series is not moved (a PHI-free sentence), or None to move it."""
        if self.modalities is not None and series.modality not in self.modalities:
            want = ",".join(sorted(self.modalities))
            return f"modality {series.modality or '(none)'} not in {want} ({self.source})"
        if series.sop_class and (series.sop_class in self.refused_classes or (
                self.sop_classes is not None and series.sop_class not in self.sop_classes)):
            return f"SOP class {series.sop_class} not accepted ({self.source})"
        return None


@dataclass
class StudyMatch:
    study_uid: str = field(repr=False)
    study_key: str = ""
    expected: int | None = None
    count_source: Literal["study", "series", "instance", "unknown"] = "unknown"
    modalities: tuple[str, ...] = ()
    series: list[SeriesMatch] = field(default_factory=list, repr=False)

    @classmethod
    def known(cls, study_uid: str, keys: SiteKeys, expected: int | None) -> StudyMatch:
        """A study found earlier (a job's row): its UID and the count recorded then."""
        return cls(study_uid, uid_key(keys, study_uid), expected)

    def __repr__(self) -> str:
        return (f"StudyMatch(key={self.study_key[:12]}, expected={self.expected}, "
                f"source={self.count_source}, series={len(self.series)}, "
                f"modalities={self.modalities})")


# --- C-FIND ---------------------------------------------------------------------------------

def c_find(assoc: Any, ds: Dataset) -> list[Dataset]:
    """Every identifier the PACS answers for one query (raises ``PacsError`` on a failure)."""
    out: list[Dataset] = []
    since = time.monotonic()
    for status, ident in assoc.send_c_find(ds, FIND):
        if status is None or "Status" not in status:
            raise silent_peer(assoc, "C-FIND", since)
        since = time.monotonic()
        code = int(status.Status)
        if code in PENDING:
            if ident is not None:
                out.append(ident)
        elif code == 0x0000:
            break
        else:
            raise PacsError(f"C-FIND failed with status 0x{code:04X}", code="pacs-find-failed",
                            permanent=code in (0xA900, 0xC000))
    return out


def _study_query(**match: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    ds.StudyDate = ""
    ds.NumberOfStudyRelatedInstances = ""
    ds.NumberOfStudyRelatedSeries = ""
    ds.ModalitiesInStudy = ""
    for k, v in match.items():
        setattr(ds, k, v)
    return ds


def _queries(req: RetrieveRequest) -> list[Dataset]:
    qs = [_study_query(AccessionNumber=v) for v in req.accession_numbers]
    qs += [_study_query(PatientID=v) for v in req.patient_ids]
    qs += [_study_query(StudyInstanceUID=v) for v in req.study_uids]
    if req.date_from or req.date_to:
        f = req.date_from.strftime("%Y%m%d") if req.date_from else ""
        t = req.date_to.strftime("%Y%m%d") if req.date_to else ""
        qs.append(_study_query(StudyDate=f"{f}-{t}", ModalitiesInStudy=req.modality or "MG"))
    return qs


def as_int(v: Any) -> int | None:
    """A count as the PACS sent it (IS, US or missing)."""
    try:
        return int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _modalities(ident: Dataset) -> tuple[str, ...]:
    m = ident.get("ModalitiesInStudy", None)
    if m in (None, ""):
        return ()
    return tuple(str(x) for x in (m if not isinstance(m, str) else [m]))


def series_of(assoc: Any, keys: SiteKeys, study_uid: str) -> list[SeriesMatch]:
    """C-FIND at SERIES level: each series with its Modality, count and, where the PACS
    returns it (an optional key at this level), its SOP Class UID."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = ""
    ds.Modality = ""
    ds.NumberOfSeriesRelatedInstances = ""
    ds.SOPClassUID = ""
    out = []
    for ident in c_find(assoc, ds):
        uid = str(ident.get("SeriesInstanceUID", "") or "")
        if uid:
            out.append(SeriesMatch(uid, uid_key(keys, uid),
                                   as_int(ident.get("NumberOfSeriesRelatedInstances")),
                                   modality=str(ident.get("Modality", "") or "").strip(),
                                   sop_class=str(ident.get("SOPClassUID", "") or "").strip()))
    return out


def instances_of(assoc: Any, study_uid: str, series_uid: str = "") -> list[tuple[str, str]]:
    """(series UID, SOP instance UID) of every instance the PACS lists for the study."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = ""
    out = []
    for ident in c_find(assoc, ds):
        sop = str(ident.get("SOPInstanceUID", "") or "")
        ser = str(ident.get("SeriesInstanceUID", "") or series_uid)
        if sop:
            out.append((ser, sop))
    return out


def find_studies(node: NodeConfig, request: RetrieveRequest | Mapping[str, Any], *,
                 local_ae: str, keys: SiteKeys, timeouts: Timeouts | None = None,
                 progress: Callable[[int], None] | None = None) -> list[StudyMatch]:
    """C-FIND at study level (then series, then instance level where the PACS gives no count);
    one query per requested value, results de-duplicated. ``progress(n)`` gets studies found."""
    req = request if isinstance(request, RetrieveRequest) else RetrieveRequest.from_mapping(request)
    t = timeouts or Timeouts()
    found: dict[str, StudyMatch] = {}
    with association(node, local_ae, [(FIND, None)], t) as assoc:
        for q in _queries(req):
            for ident in c_find(assoc, q):
                uid = str(ident.get("StudyInstanceUID", "") or "")
                mods = _modalities(ident)
                if not uid or uid in found:
                    continue
                if req.modality and mods and req.modality not in mods:
                    continue
                n = as_int(ident.get("NumberOfStudyRelatedInstances"))
                found[uid] = StudyMatch(uid, uid_key(keys, uid), n, "study" if n is not None
                                        else "unknown", mods)
                if progress:
                    progress(len(found))
        for st in found.values():
            if st.expected is not None:
                continue
            st.series = series_of(assoc, keys, st.study_uid)
            if st.series and all(s.expected is not None for s in st.series):
                st.expected = sum(s.expected or 0 for s in st.series)
                st.count_source = "series"
            else:
                st.expected = len(instances_of(assoc, st.study_uid))
                st.count_source = "instance"
    log.info("PACS node %s: %d studies found", node.name, len(found))
    return list(found.values())
