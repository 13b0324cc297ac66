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
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from service.audit import atna_events, atna_export
from service.core.config import Settings
from service.core.errors import Retryable
from service.core.keys import SiteKeys
from service.db.session import get_sessionmaker
from service.dicom import admin
from service.dicom.find import SeriesFilter, StudyMatch, find_studies
from service.dicom.leases import Leases
from service.dicom.pull import PullContext, RetryPolicy, retrieve_study
from service.dicom.scu import PacsError, node_tls, tls_failure
from service.dicom.tls import DicomTlsFiles
from service.jobs.transitions import FoundStudy

STORED = (0x0000, 0xB000, 0xB007, 0xB006)  # success and the C-STORE warnings
FALLBACK_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)  # for uncompressed files


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
    keywords = sorted(str(k) for k in request)  # ATNA gets the keys asked, never the values

    def audit(matches: int, reason: str | None) -> None:
        atna_export.send(lambda src: atna_events.query(
            src, node_ae=node.ae_title, node_host=node.host, level="STUDY", keys=keywords,
            matches=matches, ok=reason is None, reason=reason))

    # a PacsError marked permanent goes up as it is: the base task fails the job with it
    try:
        found = find_studies(node, request, local_ae=local,
                             keys=SiteKeys.for_settings(settings),
                             tls_files=DicomTlsFiles.from_settings(settings))
    except PacsError as exc:
        audit(0, exc.code)
        raise
    audit(len(found), None)
    return [FoundStudy(study_uid=f.study_uid, expected=f.expected) for f in found]


def retrieve(settings: Settings, pacs: str, study_uid: str, expected: int | None, *,
             attempt: int, retry: RetryPolicy | None = None,
             series_filter: SeriesFilter | None = None,
             should_stop: Callable[[], bool] | None = None,
             job: str | None = None) -> RetrieveOutcome:
    """One attempt at pulling one study to our listener; the DICOM area decides completeness
    and asks only for what is missing. It never raises for PACS failures: a report that is
    neither complete nor worth another attempt is a failed study. ``series_filter``: move only
    the series it keeps (the others are reported skipped); ``should_stop``: polled while the
    move runs, True sends C-CANCEL (the job was cancelled)."""
    node, _ = _node(settings, pacs)
    ctx = dataclasses.replace(PullContext.for_settings(settings, node), should_stop=should_stop)
    study = StudyMatch.known(study_uid, ctx.keys, expected)
    atna_export.send(lambda src: atna_events.retrieve_started(
        src, node_ae=node.ae_title, node_host=node.host, study_key=study.study_key,
        job=job or "-"))
    rep = retrieve_study(node, study, ctx, attempt=attempt, retry=retry,
                         series_filter=series_filter)
    if rep.status != "retry":  # the final word on this study: complete or failed
        atna_export.send(lambda src: atna_events.retrieved(
            src, node_ae=node.ae_title, node_host=node.host, study_key=study.study_key,
            job=job or "-", sop_classes={}, ok=rep.complete,
            reason=None if rep.complete else f"{rep.reason or 'incomplete'}: received "
            f"{rep.received} of {rep.expected if rep.expected is not None else '?'}"))
    reason = None if rep.complete else (
        f"{rep.reason or 'incomplete'}: {rep.detail}" if rep.detail else rep.reason)
    return RetrieveOutcome(complete=rep.complete, reason=reason, expected=rep.expected,
                           received=rep.received, retry_in=rep.retry_in,
                           skipped=rep.skipped_instances, skipped_reason=rep.skipped_reason)


def forward(settings: Settings, destination: str, paths: list[Path]) -> int:
    """C-STORE de-identified files to a research PACS node (over DICOM TLS when its policy
    says so; a TLS refusal is the refusal's code, not retried)."""
    if not paths:
        return 0
    node, local = _node(settings, destination)
    headers = [dcmread(p, stop_before_pixels=True) for p in paths]  # de-identified copies
    counts: dict[str, int] = {}
    classes: dict[str, set[str]] = {}  # SOP class -> the transfer syntaxes of its files
    for h in headers:
        counts[str(h.SOPClassUID)] = counts.get(str(h.SOPClassUID), 0) + 1
        classes.setdefault(str(h.SOPClassUID), set()).add(str(h.file_meta.TransferSyntaxUID))

    def audit(ok: bool, reason: str | None) -> None:
        atna_export.send(lambda src: atna_events.forwarded(
            src, dest_ae=node.ae_title, dest_host=node.host,
            study_uid=str(headers[0].StudyInstanceUID),
            patient_pseudonym=str(headers[0].get("PatientID", "")) or None,
            sop_classes=counts, ok=ok, reason=reason))

    # a node that needs TLS we cannot speak is a permanent PacsError (tls-not-configured)
    tls = node_tls(node, local, DicomTlsFiles.from_settings(settings))
    ae = AE(ae_title=local)
    for c, syntaxes in sorted(classes.items()):
        # Each file goes as it is (a de-identified copy keeps its transfer syntax): one context
        # per compressed syntax (a peer accepts one syntax per context), one for the rest,
        # which pynetdicom converts between as needed.
        for ts in sorted(t for t in syntaxes if UID(t).is_compressed):
            ae.add_requested_context(c, [ts])
        if any(not UID(t).is_compressed for t in syntaxes):
            ae.add_requested_context(c, [*sorted(syntaxes - {*FALLBACK_SYNTAXES}
                                                 - {t for t in syntaxes if UID(t).is_compressed}),
                                         *FALLBACK_SYNTAXES])
    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title,
                         tls_args=tls.tls_args if tls is not None else None)
    if not assoc.is_established:
        if tls is not None and tls.refusal is not None:  # permanent: a certificate to fix
            audit(False, tls.refusal.value)
            raise tls_failure(node, tls.refusal)
        audit(False, "destination-unavailable")
        raise Retryable(f"destination {node.name} did not accept an association",
                        code="destination-unavailable")
    sent = 0
    try:
        for p in paths:
            st = assoc.send_c_store(p)
            if st is None or st.Status not in STORED:
                audit(False, "destination-store-failed")
                raise Retryable(f"destination {node.name} refused an instance",
                                code="destination-store-failed")
            sent += 1
        audit(True, None)
    finally:
        assoc.release()
    return sent
