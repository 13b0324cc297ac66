"""C-MOVE / C-GET of one study, and deciding its completeness ourselves.

A study is complete when every instance the PACS lists for it is recorded by the listener
(compared by keyed hash; no original UID is stored). One call of ``retrieve_study`` is ONE
attempt: the first asks for the whole study; an attempt that finds part of it already here asks
only for what is missing (whole series when a series is missing entirely, else the instances).
Between attempts the caller waits ``RetrieveReport.retry_in`` seconds (exponential backoff): the
retrieve task does so through Celery's retry countdown, so no worker slot is held asleep. A
study that is still not complete after the last attempt ends ``failed`` with a reason code and
a PHI-free detail. C-GET stores through the same code path as the listener (``StoreSink``).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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
from service.dicom.find import FIND, StudyMatch, as_int, instances_of
from service.dicom.scu import PENDING, PacsError, Timeouts, association, silent_peer
from service.dicom.sopclasses import MAMMOGRAPHY, OTHER_STORAGE, TRANSFER_SYNTAXES
from service.dicom.spool import Spool
from service.dicom.store_handler import StoreSink
from service.dicom.tls import DicomTlsFiles
from service.dicom.uid_keys import uid_key

log = logging.getLogger(__name__)

MOVE = "1.2.840.10008.5.1.4.1.2.2.2"  # Study Root Query/Retrieve Information Model - MOVE
GET = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Query/Retrieve Information Model - GET
MOVE_DESTINATION_UNKNOWN = 0xA801


@dataclass
class RetrieveProgress:
    study_key: str
    phase: str  # moving | getting | checking | retrying | done | failed
    attempt: int
    expected: int | None
    received: int
    remaining: int | None = None  # PACS's own count of sub-operations still to do


@dataclass
class RetrieveReport:
    study_key: str
    # retry: not complete yet, and another attempt may help (after ``retry_in`` seconds)
    status: Literal["complete", "retry", "failed"] = "failed"
    expected: int | None = None
    received: int = 0
    attempts: int = 0  # the attempt this report is about; 0: nothing needed pulling
    completed_subops: int = 0
    failed_subops: int = 0
    warning_subops: int = 0
    reason: str | None = None  # a code: pacs-refused, move-destination-refused, incomplete, ...
    detail: str | None = None  # PHI-free sentence for the operator
    retry_in: float | None = None  # seconds to wait before the next attempt (status "retry")

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
        """The wait after attempt ``attempt`` (1-based) failed."""
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))


Progress = Callable[[RetrieveProgress], None]


def received_keys(db_url: str, study_key: str) -> set[str]:
    """SOP-instance keys the listener has recorded for a study (any status)."""
    with get_sessionmaker(db_url)() as s:
        return set(s.scalars(select(ReceivedInstance.sop_key).where(
            ReceivedInstance.study_key == study_key)))


@dataclass(frozen=True)
class PullContext:
    """Where a pull delivers and how its arrivals are seen: our AE title (the C-MOVE
    destination), the site keys, the SOP keys recorded for a study key, and for C-GET nodes
    the spool sink the instances are stored through; our DICOM TLS files for a TLS node."""

    local_ae: str
    keys: SiteKeys
    received: Callable[[str], set[str]]
    sink: StoreSink | None = None
    tls_files: DicomTlsFiles | None = None

    @classmethod
    def for_settings(cls, settings: Settings, node: NodeConfig) -> PullContext:
        """The gateway's own: local AE from the database, arrivals as the listener records them."""
        with get_sessionmaker(settings.db_url)() as s:
            local_ae = admin.get_local_ae(s, settings).ae_title
        keys = SiteKeys.for_settings(settings)
        sink = None
        if node.retrieve == "get":
            sink = StoreSink(db_url=settings.db_url, keys=keys, spool=Spool(
                settings.spool_dir, free_floor_bytes=settings.spool_free_floor_mb << 20))
        return cls(local_ae, keys, functools.partial(received_keys, settings.db_url), sink,
                   DicomTlsFiles.from_settings(settings))


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


def _consume(assoc: Any, responses: Iterable[tuple[Any, Any]], res: _PullResult,
             on_pending: Callable[[int | None], None]) -> None:
    started = False
    since = time.monotonic()
    for status, _ident in responses:
        if status is None or "Status" not in status:
            raise silent_peer(assoc, "retrieve", since)
        since = time.monotonic()
        code = int(status.Status)
        if code in PENDING:
            started = True
            on_pending(as_int(status.get("NumberOfRemainingSuboperations")))
            continue
        res.status = code
        res.completed += as_int(status.get("NumberOfCompletedSuboperations")) or 0
        res.failed += as_int(status.get("NumberOfFailedSuboperations")) or 0
        res.warning += as_int(status.get("NumberOfWarningSuboperations")) or 0
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
          on_pending: Callable[[int | None], None],
          tls_files: DicomTlsFiles | None = None) -> _PullResult:
    res = _PullResult()
    if node.retrieve == "get":
        if sink is None:
            raise PacsError("C-GET needs a spool sink", code="configuration", permanent=True)
        contexts, roles = _get_contexts()
        with association(node, local_ae, contexts, timeouts, ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, sink.handle_store)],
                         tls_files=tls_files) as assoc:
            for ds in _identifiers(study_uid, plan):
                _consume(assoc, assoc.send_c_get(ds, GET), res, on_pending)
    else:
        with association(node, local_ae, [(MOVE, None)], timeouts,
                         tls_files=tls_files) as assoc:
            for ds in _identifiers(study_uid, plan):
                _consume(assoc, assoc.send_c_move(ds, local_ae, MOVE), res, on_pending)
    return res


def _missing_plan(node: NodeConfig, study_uid: str, have: set[str], *, local_ae: str,
                  keys: SiteKeys, timeouts: Timeouts,
                  tls_files: DicomTlsFiles | None = None) -> tuple[int, dict[str, list[str]]]:
    """(instances the PACS lists, {series UID: missing SOP UIDs, or [] for a whole series})."""
    with association(node, local_ae, [(FIND, None)], timeouts, tls_files=tls_files) as assoc:
        listing = instances_of(assoc, study_uid)
    by_series: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = {}
    for ser, sop in listing:
        by_series.setdefault(ser, []).append(sop)
        if uid_key(keys, sop) not in have:
            missing.setdefault(ser, []).append(sop)
    plan = {ser: ([] if len(sops) == len(by_series[ser]) else sops)
            for ser, sops in missing.items()}
    return len(listing), plan


def retrieve_study(node: NodeConfig, study: StudyMatch, ctx: PullContext, *, attempt: int = 1,
                   retry: RetryPolicy | None = None,
                   progress: Progress | None = None) -> RetrieveReport:
    """One attempt at pulling one study; never raises for PACS failures.

    ``attempt`` (1-based) decides whether a failure is final: status ``retry`` with
    ``retry_in`` while attempts remain and the failure is not permanent, else ``failed``."""
    return _Attempt(node, study, ctx, retry or RetryPolicy(), attempt, progress).run()


class _Attempt:
    def __init__(self, node: NodeConfig, study: StudyMatch, ctx: PullContext,
                 policy: RetryPolicy, attempt: int, progress: Progress | None) -> None:
        self.node, self.study, self.ctx, self.policy = node, study, ctx, policy
        self.attempt, self.progress = attempt, progress
        self.report = RetrieveReport(study.study_key, expected=study.expected, attempts=attempt)

    def received(self) -> set[str]:
        return self.ctx.received(self.study.study_key)

    def _tell(self, phase: str, remaining: int | None = None) -> None:
        if self.progress:
            try:
                self.progress(RetrieveProgress(self.study.study_key, phase, self.report.attempts,
                                               self.report.expected, self.report.received,
                                               remaining))
            except Exception:
                log.exception("progress callback failed")

    def _done(self) -> RetrieveReport:
        r = self.report
        r.status, r.reason, r.detail = "complete", None, None
        self._tell("done")
        log.info("study %s complete: %d of %s instances", r.study_key[:12], r.received,
                 r.expected)
        return r

    def run(self) -> RetrieveReport:
        r = self.report
        have = self.received()
        r.received = len(have)
        if r.expected is not None and r.received >= r.expected:
            r.attempts = 0  # already here (a resumed job): nothing to pull
            return self._done()
        permanent = False
        try:
            plan: dict[str, list[str]] | None = None
            if r.received:  # something arrived earlier: ask only for the rest
                plan = self._missing(have)
                if not plan:
                    return self._done()
            self._tell("getting" if self.node.retrieve == "get" else "moving")
            pulled = _pull(self.node, self.study.study_uid, plan, local_ae=self.ctx.local_ae,
                           sink=self.ctx.sink, timeouts=self.policy.timeouts,
                           on_pending=self._pending, tls_files=self.ctx.tls_files)
            r.completed_subops += pulled.completed
            r.failed_subops += pulled.failed
            r.warning_subops += pulled.warning
            have = self.received()
            r.received = len(have)
            self._tell("checking")
            plan = self._missing(have)
            if not plan:
                return self._done()
            n_missing = sum(len(v) or 1 for v in plan.values())
            r.reason = "incomplete"
            r.detail = (f"received {r.received} of {r.expected} instances after attempt "
                        f"{self.attempt}; PACS reported {pulled.completed} sub-operations "
                        f"completed, {pulled.failed} failed, final status "
                        f"0x{(pulled.status or 0):04X}; missing in {len(plan)} series "
                        f"(>= {n_missing} instances)")
        except PacsError as exc:
            r.reason, r.detail, permanent = exc.code, exc.reason, exc.permanent
            r.received = len(self.received())
        if not permanent and self.attempt < self.policy.attempts:
            r.status, r.retry_in = "retry", self.policy.delay(self.attempt)
            log.warning("study %s attempt %d: %s; again in %.1f s", r.study_key[:12],
                        self.attempt, r.reason, r.retry_in)
            self._tell("retrying")
            return r
        r.status = "failed"
        self._tell("failed")
        log.warning("study %s failed: %s (%d of %s received)", r.study_key[:12], r.reason,
                    r.received, r.expected)
        return r

    def _missing(self, have: set[str]) -> dict[str, list[str]]:
        """What the PACS lists that is not in ``have``; raises ``expected`` to what it lists."""
        listed, plan = _missing_plan(self.node, self.study.study_uid, have,
                                     local_ae=self.ctx.local_ae, keys=self.ctx.keys,
                                     timeouts=self.policy.timeouts,
                                     tls_files=self.ctx.tls_files)
        self.report.expected = max(self.report.expected or 0, listed)
        return plan

    def _pending(self, remaining: int | None) -> None:
        if self.progress:
            self.report.received = len(self.received())
        self._tell("moving" if self.node.retrieve == "move" else "getting", remaining)
