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
import threading
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
from service.dicom.find import (
    FIND,
    SeriesFilter,
    SeriesMatch,
    StudyMatch,
    as_int,
    instances_of,
    series_of,
)
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
CANCEL = 0xFE00  # sub-operations terminated due to a Cancel indication


@dataclass
class RetrieveProgress:
    study_key: str
    phase: str  # moving | getting | checking | retrying | done | failed
    attempt: int
    expected: int | None
    received: int
    remaining: int | None = None  # PACS's own count of sub-operations still to do


@dataclass(frozen=True)
class SkippedSeries:
    """A series the retrieval did not move, and why (its position, never its UID)."""

    index: int
    modality: str
    instances: int | None
    reason: str


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
    skipped: list[SkippedSeries] = field(default_factory=list)  # not moved, by the filter

    @property
    def skipped_instances(self) -> int:
        return sum(s.instances or 0 for s in self.skipped)

    @property
    def skipped_reason(self) -> str | None:
        """One PHI-free line per skipped series (modality, count, why), or None."""
        if not self.skipped:
            return None
        return "; ".join(f"series {s.index} ({s.instances if s.instances is not None else '?'} "
                         f"instances): {s.reason}" for s in self.skipped)[:2000]

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
    # polled while a C-MOVE/C-GET runs (the job was cancelled): True sends C-CANCEL
    should_stop: Callable[[], bool] | None = None
    stop_poll_s: float = 0.5
    cancel_grace_s: float = 3.0  # a PACS that ignores C-CANCEL is aborted after this
    tls_files: DicomTlsFiles | None = None

    @classmethod
    def for_settings(cls, settings: Settings, node: NodeConfig) -> PullContext:
        """The gateway's own: local AE from the database, arrivals as the listener records them."""
        with get_sessionmaker(settings.db_url)() as s:
            local_ae = admin.get_local_ae(s, settings).ae_title
        keys = SiteKeys.for_settings(settings)
        sink = None
        if node.retrieve == "get":
            # this host's spool: the files' rows name this node, de-identified here
            sink = StoreSink(db_url=settings.db_url, keys=keys, spool=Spool.for_settings(settings))
        return cls(local_ae, keys, functools.partial(received_keys, settings.db_url), sink,
                   tls_files=DicomTlsFiles.from_settings(settings))


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
             on_pending: Callable[[int | None], None],
             cancelled: threading.Event | None = None) -> None:
    started = False
    since = time.monotonic()
    for status, _ident in responses:
        if status is None or "Status" not in status:
            raise silent_peer(assoc, "retrieve", since)
        since = time.monotonic()
        code = int(status.Status)
        if code == CANCEL and cancelled is not None and cancelled.is_set():
            res.status = code
            return
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


class PullCancelled(PacsError):
    """The retrieval was stopped on request (the job was cancelled): not a PACS failure."""


class _CancelWatch:
    """Polls ``should_stop`` beside a running C-MOVE/C-GET. When it turns True: C-CANCEL for
    the message in flight (PS3.4 C.4.2.3.1: the PACS stops its sub-operations and answers
    Cancel, 0xFE00), and if the PACS goes on regardless, an A-ABORT after ``grace`` s.

    A thread, not a check between responses: a PACS sends a pending response per
    sub-operation, and one large instance can take longer than "within seconds"."""

    def __init__(self, assoc: Any, model: str, should_stop: Callable[[], bool] | None,
                 poll: float, grace: float) -> None:
        self.assoc, self.model, self.should_stop = assoc, model, should_stop
        self.poll, self.grace = poll, grace
        self.msg_id = 0
        self.fired = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _CancelWatch:
        if self.should_stop is not None:
            self._thread = threading.Thread(target=self._run, name="deidgate-cancel-watch",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(self.poll + 1.0)

    def _run(self) -> None:
        assert self.should_stop is not None
        while not self._done.wait(self.poll):
            try:
                stop = self.should_stop()
            except Exception:  # the database is briefly unreachable: keep moving, ask again
                log.warning("cancel check failed; the retrieval goes on")
                continue
            if not stop:
                continue
            self.fired.set()
            log.info("retrieval cancelled: sending C-CANCEL for message %d", self.msg_id)
            try:
                self.assoc.send_c_cancel(self.msg_id, query_model=self.model)
            except Exception:
                log.warning("C-CANCEL could not be sent; aborting the association")
                self._abort()
                return
            if not self._done.wait(self.grace):
                log.warning("the PACS went on after C-CANCEL; aborting the association")
                self._abort()
            return

    def _abort(self) -> None:
        """A-ABORT, then wake the move's response loop: pynetdicom's generator waits on its
        DIMSE queue for up to the DIMSE timeout and a local abort puts nothing there; the
        (None, None) it would get on that timeout ends the loop now."""
        self.assoc.abort()
        q = getattr(getattr(self.assoc, "dimse", None), "msg_queue", None)
        if q is not None:
            q.put((None, None))


def _pull(node: NodeConfig, study_uid: str, plan: dict[str, list[str]] | None, *, local_ae: str,
          sink: StoreSink | None, timeouts: Timeouts,
          on_pending: Callable[[int | None], None],
          ctx: PullContext | None = None) -> _PullResult:
    res = _PullResult()
    tls_files = ctx.tls_files if ctx is not None else None
    should_stop = ctx.should_stop if ctx is not None else None
    poll = ctx.stop_poll_s if ctx is not None else 0.5
    grace = ctx.cancel_grace_s if ctx is not None else 3.0
    if node.retrieve == "get":
        if sink is None:
            raise PacsError("C-GET needs a spool sink", code="configuration", permanent=True)
        contexts, roles = _get_contexts()
        cm = association(node, local_ae, contexts, timeouts, ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, sink.handle_store)],
                         tls_files=tls_files)
        model = GET
    else:
        cm = association(node, local_ae, [(MOVE, None)], timeouts, tls_files=tls_files)
        model = MOVE
    watch: _CancelWatch | None = None
    try:
        with cm as assoc, _CancelWatch(assoc, model, should_stop, poll, grace) as watch:
            for i, ds in enumerate(_identifiers(study_uid, plan), 1):
                if watch.fired.is_set():
                    break
                watch.msg_id = i
                responses = (assoc.send_c_get(ds, GET, msg_id=i) if model == GET
                             else assoc.send_c_move(ds, local_ae, MOVE, msg_id=i))
                _consume(assoc, responses, res, on_pending, cancelled=watch.fired)
    except PacsError:
        if watch is None or not watch.fired.is_set():
            raise
    if watch is not None and watch.fired.is_set():
        raise PullCancelled("the retrieval was cancelled", code="cancelled", permanent=True)
    return res


def _missing_plan(node: NodeConfig, study_uid: str, have: set[str], *, local_ae: str,
                  keys: SiteKeys, timeouts: Timeouts,
                  only: list[str] | None = None,
                  tls_files: DicomTlsFiles | None = None) -> tuple[int, dict[str, list[str]]]:
    """(instances the PACS lists, {series UID: missing SOP UIDs, or [] for a whole series});
    ``only``: these series (the filtered retrieval's), else the whole study."""
    with association(node, local_ae, [(FIND, None)], timeouts, tls_files=tls_files) as assoc:
        if only is None:
            listing = instances_of(assoc, study_uid)
        else:
            listing = [x for ser in only for x in instances_of(assoc, study_uid, ser)]
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
                   retry: RetryPolicy | None = None, progress: Progress | None = None,
                   series_filter: SeriesFilter | None = None) -> RetrieveReport:
    """One attempt at pulling one study; never raises for PACS failures.

    ``attempt`` (1-based) decides whether a failure is final: status ``retry`` with
    ``retry_in`` while attempts remain and the failure is not permanent, else ``failed``.
    With ``series_filter`` the study's series are found first (C-FIND, SERIES level) and only
    those the filter keeps are moved (one C-MOVE per kept series when the filter skips any,
    else one for the whole study: one association back from the PACS, not one per series);
    the others are reported as skipped with a reason, and completeness counts only what was
    asked for. When every instance the PACS counted has arrived and the move reports no
    failure, no instance-level listing is asked for to confirm it."""
    return _Attempt(node, study, ctx, retry or RetryPolicy(), attempt, progress,
                    series_filter).run()


class _Attempt:
    def __init__(self, node: NodeConfig, study: StudyMatch, ctx: PullContext,
                 policy: RetryPolicy, attempt: int, progress: Progress | None,
                 series_filter: SeriesFilter | None = None) -> None:
        self.node, self.study, self.ctx, self.policy = node, study, ctx, policy
        self.attempt, self.progress = attempt, progress
        self.filter = series_filter
        self.only: list[str] | None = None  # the series to move (None: the whole study)
        self.report = RetrieveReport(study.study_key, expected=study.expected, attempts=attempt)

    def _select(self) -> None:
        """Apply the series filter: which series to move, the count to expect of them."""
        assert self.filter is not None
        with association(self.node, self.ctx.local_ae, [(FIND, None)], self.policy.timeouts,
                         tls_files=self.ctx.tls_files) as assoc:
            series: list[SeriesMatch] = series_of(assoc, self.ctx.keys, self.study.study_uid)
        keep: list[SeriesMatch] = []
        for i, ser in enumerate(series):
            why = self.filter.skip_reason(ser)
            if why is None:
                keep.append(ser)
            else:
                self.report.skipped.append(SkippedSeries(i, ser.modality, ser.expected, why))
        self.only = [ser.series_uid for ser in keep]
        if all(ser.expected is not None for ser in keep):
            self.report.expected = sum(ser.expected or 0 for ser in keep)
        else:
            self.report.expected = None  # the instance listing below counts them
        if self.report.skipped:
            log.info("study %s: %d of %d series skipped by the filter",
                     self.study.study_key[:12], len(self.report.skipped), len(series))

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
        permanent = False
        try:
            if self.filter is not None:
                self._select()
            have = self.received()
            r.received = len(have)
            if self.only is None and r.expected is not None and r.received >= r.expected:
                r.attempts = 0  # already here (a resumed job): nothing to pull
                return self._done()
            plan: dict[str, list[str]] | None = None
            if r.received:  # something arrived earlier: ask only for the rest
                plan = self._missing(have)
                if not plan:
                    return self._done()
            elif self.only is not None and (self.report.skipped or not self.only):
                plan = {ser: [] for ser in self.only}  # only the kept series (maybe none)
            self._tell("getting" if self.node.retrieve == "get" else "moving")
            pulled = _pull(self.node, self.study.study_uid, plan, local_ae=self.ctx.local_ae,
                           sink=self.ctx.sink, timeouts=self.policy.timeouts,
                           on_pending=self._pending, ctx=self.ctx)
            r.completed_subops += pulled.completed
            r.failed_subops += pulled.failed
            r.warning_subops += pulled.warning
            have = self.received()
            r.received = len(have)
            if (not self.report.skipped and r.expected is not None
                    and r.received >= r.expected and not pulled.failed and not pulled.warning):
                # every instance the PACS counted is here; with skipped series the study's
                # arrivals may hold some of theirs (a push), so the listing decides instead
                return self._done()
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
        if r.reason == "cancelled":  # on request: the study is already cancelled, not failed
            log.info("study %s: retrieval stopped on cancel (%d of %s received)",
                     r.study_key[:12], r.received, r.expected)
        else:
            log.warning("study %s failed: %s (%d of %s received)", r.study_key[:12], r.reason,
                        r.received, r.expected)
        return r

    def _missing(self, have: set[str]) -> dict[str, list[str]]:
        """What the PACS lists that is not in ``have``; raises ``expected`` to what it lists."""
        listed, plan = _missing_plan(self.node, self.study.study_uid, have,
                                     local_ae=self.ctx.local_ae, keys=self.ctx.keys,
                                     timeouts=self.policy.timeouts, only=self.only,
                                     tls_files=self.ctx.tls_files)
        self.report.expected = max(self.report.expected or 0, listed)
        return plan

    def _pending(self, remaining: int | None) -> None:
        if self.progress:
            self.report.received = len(self.received())
        self._tell("moving" if self.node.retrieve == "move" else "getting", remaining)
