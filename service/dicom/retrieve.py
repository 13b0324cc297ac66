"""Query/retrieve SCU: resolve a request to studies (C-FIND), pull them (C-MOVE to our own AE,
or C-GET through the same spool code path), and decide completeness ourselves.

A study is complete when every instance the PACS lists for it is recorded by the listener
(compared by keyed hash; no original UID is stored). The first pull asks for the whole study;
later attempts ask only for what is missing (whole series when a series is missing entirely,
else the instances). Transient failures retry with exponential backoff; a study that still is
not complete ends ``failed`` with a reason code and a PHI-free detail.

Entry points for the jobs area: ``find_studies`` and ``retrieve_study``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from pydicom.dataset import Dataset
from pynetdicom import build_role, evt
from sqlalchemy import select

from service.core.config import Settings
from service.core.keys import SiteKeys
from service.db.models.dicom import ReceivedInstance
from service.db.session import get_sessionmaker
from service.dicom import admin
from service.dicom.admin import NodeConfig
from service.dicom.ident import uid_key
from service.dicom.ingest import StoreSink
from service.dicom.scu import PacsError, Timeouts, association
from service.dicom.sopclasses import MAMMOGRAPHY, OTHER_STORAGE, TRANSFER_SYNTAXES
from service.dicom.spool import Spool

log = logging.getLogger(__name__)

FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
GET = "1.2.840.10008.5.1.4.1.2.2.3"
PENDING = (0xFF00, 0xFF01)
MOVE_DESTINATION_UNKNOWN = 0xA801


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


@dataclass
class StudyMatch:
    study_uid: str = field(repr=False)
    study_key: str = ""
    expected: int | None = None
    count_source: Literal["study", "series", "instance", "unknown"] = "unknown"
    modalities: tuple[str, ...] = ()
    series: list[SeriesMatch] = field(default_factory=list, repr=False)

    def __repr__(self) -> str:
        return (f"StudyMatch(key={self.study_key[:12]}, expected={self.expected}, "
                f"source={self.count_source}, series={len(self.series)}, "
                f"modalities={self.modalities})")


@dataclass
class RetrieveProgress:
    study_key: str
    phase: str  # finding | moving | getting | checking | done | failed
    attempt: int
    expected: int | None
    received: int
    remaining: int | None = None  # PACS's own count of sub-operations still to do


@dataclass
class RetrieveReport:
    study_key: str
    status: Literal["complete", "failed"] = "failed"
    expected: int | None = None
    received: int = 0
    attempts: int = 0
    completed_subops: int = 0
    failed_subops: int = 0
    warning_subops: int = 0
    reason: str | None = None  # a code: pacs-refused, move-destination-refused, incomplete, ...
    detail: str | None = None  # PHI-free sentence for the operator

    @property
    def complete(self) -> bool:
        return self.status == "complete"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    backoff_s: float = 2.0
    max_backoff_s: float = 60.0
    timeouts: Timeouts = field(default_factory=Timeouts)

    def delay(self, attempt: int) -> float:
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))


Progress = Callable[[RetrieveProgress], None]


# --- C-FIND ---------------------------------------------------------------------------------

def _find(assoc: Any, ds: Dataset) -> list[Dataset]:
    out: list[Dataset] = []
    since = time.monotonic()
    for status, ident in assoc.send_c_find(ds, FIND):
        if status is None or "Status" not in status:
            raise _silent(assoc, "C-FIND", since)
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


def _int(v: Any) -> int | None:
    try:
        return int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _modalities(ident: Dataset) -> tuple[str, ...]:
    m = ident.get("ModalitiesInStudy", None)
    if m in (None, ""):
        return ()
    return tuple(str(x) for x in (m if not isinstance(m, str) else [m]))


def _series_of(assoc: Any, keys: SiteKeys, study_uid: str) -> list[SeriesMatch]:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = ""
    ds.Modality = ""
    ds.NumberOfSeriesRelatedInstances = ""
    out = []
    for ident in _find(assoc, ds):
        uid = str(ident.get("SeriesInstanceUID", "") or "")
        if uid:
            out.append(SeriesMatch(uid, uid_key(keys, uid),
                                   _int(ident.get("NumberOfSeriesRelatedInstances"))))
    return out


def _instances_of(assoc: Any, study_uid: str, series_uid: str = "") -> list[tuple[str, str]]:
    """(series UID, SOP instance UID) of every instance the PACS lists for the study."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = ""
    out = []
    for ident in _find(assoc, ds):
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
            for ident in _find(assoc, q):
                uid = str(ident.get("StudyInstanceUID", "") or "")
                mods = _modalities(ident)
                if not uid or uid in found:
                    continue
                if req.modality and mods and req.modality not in mods:
                    continue
                n = _int(ident.get("NumberOfStudyRelatedInstances"))
                found[uid] = StudyMatch(uid, uid_key(keys, uid), n, "study" if n is not None
                                        else "unknown", mods)
                if progress:
                    progress(len(found))
        for st in found.values():
            if st.expected is not None:
                continue
            st.series = _series_of(assoc, keys, st.study_uid)
            if st.series and all(s.expected is not None for s in st.series):
                st.expected = sum(s.expected or 0 for s in st.series)
                st.count_source = "series"
            else:
                st.expected = len(_instances_of(assoc, st.study_uid))
                st.count_source = "instance"
    log.info("PACS node %s: %d studies found", node.name, len(found))
    return list(found.values())


# --- C-MOVE / C-GET -------------------------------------------------------------------------

@dataclass
class _PullResult:
    status: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0


def _identifiers(study_uid: str, plan: dict[str, list[str]] | None) -> list[Dataset]:
    """Whole study, or per series: the whole series (empty list) or the listed instances."""
    if plan is None:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = study_uid
        return [ds]
    out = []
    for series_uid, sops in plan.items():
        ds = Dataset()
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        if sops:
            ds.QueryRetrieveLevel = "IMAGE"
            ds.SOPInstanceUID = sops if len(sops) > 1 else sops[0]
        else:
            ds.QueryRetrieveLevel = "SERIES"
        out.append(ds)
    return out


def _silent(assoc: Any, what: str, since: float) -> PacsError:
    """No response: pynetdicom aborts on its DIMSE timeout too, so time tells the two apart."""
    waited = time.monotonic() - since
    limit = float(getattr(assoc, "dimse_timeout", None) or 0)
    if limit and waited >= 0.9 * limit:
        return PacsError(f"{what}: no answer from the PACS within {limit:.0f} s",
                         code="pacs-timed-out")
    return PacsError(f"{what}: the PACS aborted the association", code="pacs-aborted")


def _consume(assoc: Any, responses: Iterable[tuple[Any, Any]], res: _PullResult,
             on_pending: Callable[[int | None], None]) -> None:
    started = False
    since = time.monotonic()
    for status, _ident in responses:
        if status is None or "Status" not in status:
            raise _silent(assoc, "retrieve", since)
        since = time.monotonic()
        code = int(status.Status)
        if code in PENDING:
            started = True
            on_pending(_int(status.get("NumberOfRemainingSuboperations")))
            continue
        res.status = code
        res.completed += _int(status.get("NumberOfCompletedSuboperations")) or 0
        res.failed += _int(status.get("NumberOfFailedSuboperations")) or 0
        res.warning += _int(status.get("NumberOfWarningSuboperations")) or 0
        if code == MOVE_DESTINATION_UNKNOWN:
            raise PacsError("the PACS does not know our AE title as a move destination",
                            code="move-destination-refused", permanent=True)
        if code not in (0x0000, 0xB000) and not 0xA700 <= code <= 0xA7FF:
            if not started and res.completed == res.failed == res.warning == 0:
                # refused before sending anything: Orthanc, for one, answers an unknown move
                # destination with 0xC000 and no sub-operations instead of 0xA801
                raise PacsError(f"the PACS refused the retrieve before sending anything (status "
                                f"0x{code:04X}); check that it knows our AE title as a "
                                f"destination", code="move-refused")
            raise PacsError(f"the retrieve failed with status 0x{code:04X}",
                            code="pacs-retrieve-failed")


def _get_contexts() -> tuple[list[tuple[str, list[str] | None]], list[Any]]:
    """C-GET needs us as storage SCP on the same association: for mammography one context per
    transfer syntax (so the PACS sends its stored syntax as-is), one context for the rest."""
    contexts: list[tuple[str, list[str] | None]] = [(GET, None)]
    for uid in MAMMOGRAPHY:
        contexts += [(uid, [ts]) for ts in TRANSFER_SYNTAXES]
    contexts += [(uid, list(TRANSFER_SYNTAXES)) for uid in OTHER_STORAGE]
    roles = [build_role(uid, scp_role=True) for uid in {**MAMMOGRAPHY, **OTHER_STORAGE}]
    return contexts[:128], roles


def _pull(node: NodeConfig, study_uid: str, plan: dict[str, list[str]] | None, *, local_ae: str,
          sink: StoreSink | None, timeouts: Timeouts,
          on_pending: Callable[[int | None], None]) -> _PullResult:
    res = _PullResult()
    if node.retrieve == "get":
        if sink is None:
            raise PacsError("C-GET needs a spool sink", code="configuration", permanent=True)
        contexts, roles = _get_contexts()
        with association(node, local_ae, contexts, timeouts, ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, sink.handle_store)]) as assoc:
            for ds in _identifiers(study_uid, plan):
                _consume(assoc, assoc.send_c_get(ds, GET), res, on_pending)
    else:
        with association(node, local_ae, [(MOVE, None)], timeouts) as assoc:
            for ds in _identifiers(study_uid, plan):
                _consume(assoc, assoc.send_c_move(ds, local_ae, MOVE), res, on_pending)
    return res


def _missing_plan(node: NodeConfig, study_uid: str, have: set[str], *, local_ae: str,
                  keys: SiteKeys, timeouts: Timeouts) -> tuple[int, dict[str, list[str]]]:
    """(instances the PACS lists, {series UID: missing SOP UIDs, or [] for a whole series})."""
    with association(node, local_ae, [(FIND, None)], timeouts) as assoc:
        listing = _instances_of(assoc, study_uid)
    by_series: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = {}
    for ser, sop in listing:
        by_series.setdefault(ser, []).append(sop)
        if uid_key(keys, sop) not in have:
            missing.setdefault(ser, []).append(sop)
    plan = {ser: ([] if len(sops) == len(by_series[ser]) else sops)
            for ser, sops in missing.items()}
    return len(listing), plan


def received_keys(db_url: str, study_key: str) -> set[str]:
    """SOP-instance keys the listener has recorded for a study (any status)."""
    with get_sessionmaker(db_url)() as s:
        return set(s.scalars(select(ReceivedInstance.sop_key).where(
            ReceivedInstance.study_key == study_key)))


def retrieve_study(node: NodeConfig, study: StudyMatch | str, *, local_ae: str | None = None,
                   keys: SiteKeys | None = None, received: Callable[[], set[str]] | None = None,
                   settings: Settings | None = None, expected: int | None = None,
                   sink: StoreSink | None = None, progress: Progress | None = None,
                   retry: RetryPolicy | None = None) -> RetrieveReport:
    """Pull one study until complete or out of attempts; never raises for PACS failures.

    Give either ``settings`` (local AE, keys, received set and C-GET spool come from it and the
    database) or ``local_ae`` + ``keys`` + ``received`` (+ ``sink`` for C-GET nodes)."""
    policy = retry or RetryPolicy()
    if settings is not None:
        with get_sessionmaker(settings.db_url)() as s:
            local_ae = local_ae or admin.get_local_ae(s, settings).ae_title
        keys = keys or SiteKeys.for_settings(settings)
        if sink is None and node.retrieve == "get":
            sink = StoreSink(db_url=settings.db_url, keys=keys, spool=Spool(
                settings.spool_dir, free_floor_bytes=settings.spool_free_floor_mb << 20))
    if local_ae is None or keys is None:
        raise TypeError("retrieve_study needs settings, or local_ae and keys")
    if isinstance(study, str):
        study = StudyMatch(study, uid_key(keys, study), expected)
    elif expected is not None and study.expected is None:
        study.expected = expected
    if received is None:
        if settings is None:
            raise TypeError("retrieve_study needs settings or a received() callable")
        db_url, skey = settings.db_url, study.study_key

        def received() -> set[str]:
            return received_keys(db_url, skey)

    return _Retrieval(node, study, local_ae, keys, received, sink, progress, policy).run()


class _Retrieval:
    def __init__(self, node: NodeConfig, study: StudyMatch, local_ae: str, keys: SiteKeys,
                 received: Callable[[], set[str]], sink: StoreSink | None,
                 progress: Progress | None, policy: RetryPolicy) -> None:
        self.node, self.study, self.local_ae, self.keys = node, study, local_ae, keys
        self.received, self.sink, self.progress, self.policy = received, sink, progress, policy
        self.report = RetrieveReport(study.study_key, expected=study.expected)

    def _tell(self, phase: str, attempt: int, remaining: int | None = None) -> None:
        if self.progress:
            try:
                self.progress(RetrieveProgress(self.study.study_key, phase, attempt,
                                               self.report.expected, self.report.received,
                                               remaining))
            except Exception:
                log.exception("progress callback failed")

    def _done(self, attempt: int) -> RetrieveReport:
        r = self.report
        r.status, r.reason, r.detail = "complete", None, None
        self._tell("done", attempt)
        log.info("study %s complete: %d of %s instances", r.study_key[:12], r.received,
                 r.expected)
        return r

    def run(self) -> RetrieveReport:
        r, p = self.report, self.policy
        have = self.received()
        r.received = len(have)
        if r.expected is not None and r.received >= r.expected:
            return self._done(0)  # already here (a resumed job): nothing to pull
        plan: dict[str, list[str]] | None = None
        for attempt in range(1, p.attempts + 1):
            r.attempts = attempt
            if attempt > 1:
                time.sleep(p.delay(attempt - 1))
            try:
                if r.received and plan is None:  # something arrived earlier: only the rest
                    plan = self._missing(have)
                    if not plan:
                        return self._done(attempt)
                self._tell("getting" if self.node.retrieve == "get" else "moving", attempt)
                pulled = _pull(self.node, self.study.study_uid, plan, local_ae=self.local_ae,
                               sink=self.sink, timeouts=p.timeouts,
                               on_pending=functools.partial(self._pending, attempt))
                r.completed_subops += pulled.completed
                r.failed_subops += pulled.failed
                r.warning_subops += pulled.warning
                have = self.received()
                r.received = len(have)
                self._tell("checking", attempt)
                plan = self._missing(have)
                if not plan:
                    return self._done(attempt)
                n_missing = sum(len(v) or 1 for v in plan.values())
                r.reason = "incomplete"
                r.detail = (f"received {r.received} of {r.expected} instances after attempt "
                            f"{attempt}; PACS reported {pulled.completed} sub-operations "
                            f"completed, {pulled.failed} failed, final status "
                            f"0x{(pulled.status or 0):04X}; missing in {len(plan)} series "
                            f"(>= {n_missing} instances)")
            except PacsError as exc:
                r.reason, r.detail = exc.code, exc.reason
                have = self.received()
                r.received = len(have)
                if exc.permanent:
                    break
            log.warning("study %s attempt %d: %s", r.study_key[:12], attempt, r.reason)
        r.status = "failed"
        self._tell("failed", r.attempts)
        log.warning("study %s failed: %s (%d of %s received)", r.study_key[:12], r.reason,
                    r.received, r.expected)
        return r

    def _missing(self, have: set[str]) -> dict[str, list[str]]:
        """What the PACS lists that is not in ``have``; raises ``expected`` to what it lists."""
        listed, plan = _missing_plan(self.node, self.study.study_uid, have,
                                     local_ae=self.local_ae, keys=self.keys,
                                     timeouts=self.policy.timeouts)
        self.report.expected = max(self.report.expected or 0, listed)
        return plan

    def _pending(self, attempt: int, remaining: int | None) -> None:
        self.report.received = len(self.received()) if self.progress else self.report.received
        self._tell("moving" if self.node.retrieve == "move" else "getting", attempt, remaining)
