"""What the tasks need from the DICOM edge: find a job's studies, pull one study, forward one.

Thin adapters over ``service.dicom.find`` and ``service.dicom.pull`` (which own C-FIND,
C-MOVE/C-GET and the completeness rule), translating their results into the jobs state
machine's terms. The jobs area owns them: the tasks in ``workers.tasks`` only call them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pynetdicom import AE

from service.core.config import Settings
from service.core.errors import Retryable
from service.core.keys import SiteKeys
from service.db.session import get_sessionmaker
from service.dicom import admin
from service.dicom.find import SeriesFilter, StudyMatch, find_studies
from service.dicom.leases import Leases
from service.dicom.pull import PullContext, RetryPolicy, retrieve_study
from service.jobs.transitions import FoundStudy

STORED = (0x0000, 0xB000, 0xB007, 0xB006)  # success and the C-STORE warnings


@dataclass
class RetrieveOutcome:
    complete: bool
    reason: str | None
    expected: int | None
    received: int
    retry_in: float | None = None  # not final: try again after this many seconds
    skipped: int = 0  # instances in series the filter did not move
    skipped_reason: str | None = None  # per skipped series: modality, count, why (PHI-free)


def _node(settings: Settings, name: str) -> tuple[admin.NodeConfig, str]:
    """The node, its association limit counted in the database: the workers pulling from it
    run on several processes and hosts."""
    with get_sessionmaker(settings.db_url)() as s:
        node, local = admin.get_node(s, name), admin.get_local_ae(s, settings).ae_title
    return replace(node, leases=Leases(settings.db_url)), local


def find(settings: Settings, pacs: str, request: dict[str, Any]) -> list[FoundStudy]:
    """C-FIND through the DICOM area's SCU (study, series or instance level counts)."""
    node, local = _node(settings, pacs)
    # a PacsError marked permanent goes up as it is: the base task fails the job with it
    found = find_studies(node, request, local_ae=local, keys=SiteKeys.for_settings(settings))
    return [FoundStudy(study_uid=f.study_uid, expected=f.expected) for f in found]


def retrieve(settings: Settings, pacs: str, study_uid: str, expected: int | None, *,
             attempt: int, retry: RetryPolicy | None = None,
             series_filter: SeriesFilter | None = None,
             should_stop: Callable[[], bool] | None = None) -> RetrieveOutcome:
    """One attempt at pulling one study to our listener; the DICOM area decides completeness
    and asks only for what is missing. It never raises for PACS failures: a report that is
    neither complete nor worth another attempt is a failed study. ``series_filter``: move only
    the series it keeps (the others are reported skipped); ``should_stop``: polled while the
    move runs, True sends C-CANCEL (the job was cancelled)."""
    node, _ = _node(settings, pacs)
    ctx = dataclasses.replace(PullContext.for_settings(settings, node), should_stop=should_stop)
    study = StudyMatch.known(study_uid, ctx.keys, expected)
    rep = retrieve_study(node, study, ctx, attempt=attempt, retry=retry,
                         series_filter=series_filter)
    reason = None if rep.complete else (
        f"{rep.reason or 'incomplete'}: {rep.detail}" if rep.detail else rep.reason)
    return RetrieveOutcome(complete=rep.complete, reason=reason, expected=rep.expected,
                           received=rep.received, retry_in=rep.retry_in,
                           skipped=rep.skipped_instances, skipped_reason=rep.skipped_reason)


def forward(settings: Settings, destination: str, paths: list[Path]) -> int:
    """C-STORE de-identified files to a research PACS node."""
    if not paths:
        return 0
    node, local = _node(settings, destination)
    classes = sorted({str(dcmread(p, stop_before_pixels=True).SOPClassUID) for p in paths})
    ae = AE(ae_title=local)
    for c in classes:
        ae.add_requested_context(c)
    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title)
    if not assoc.is_established:
        raise Retryable(f"destination {node.name} did not accept an association",
                        code="destination-unavailable")
    sent = 0
    try:
        for p in paths:
            st = assoc.send_c_store(p)
            if st is None or st.Status not in STORED:
                raise Retryable(f"destination {node.name} refused an instance",
                                code="destination-store-failed")
            sent += 1
    finally:
        assoc.release()
    return sent
