"""The one object the rest of the gateway talks to for ATNA export: builds the message for an
audit event and queues it on the syslog sender, never raising into the caller.

Wiring. One exporter per process (one syslog connection and sender thread), installed by the
process's entry point (``configure``: serve, listen, worker, the API app); ``current()`` is None
where no audit repository is configured, and every caller then does nothing.
- ``AuditStore.log_event`` queues the event on its session (``pending``); the message is sent
  when that session COMMITS (``after_commit``), and forgotten on rollback: the SIEM never hears
  of an event the tamper-evident log does not hold. ``lookup`` sends ``reidentify`` itself, with
  ``disclosed_patient_id``, after decrypting the patient row;
- the listener sends ``association_refused`` and, at each association's end,
  ``instances_received`` per study (``AssociationTally``); the PACS adapter
  (service.jobs.pacs) ``query``, ``retrieve_started``/``retrieved`` and ``forwarded``; each
  process ``application_activity`` at start and stop.

An audit message that cannot be built (a malformed detail) is logged by type and counted as
dropped: the audit chain in the database stays the record of truth.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from service.audit.atna import AtnaMessage, AuditSource
from service.audit.atna_events import application_activity, instances_received, message_for
from service.audit.syslog import SyslogSender
from service.core.config import Settings

log = logging.getLogger(__name__)


class AtnaExporter:
    def __init__(self, source: AuditSource, sender: SyslogSender) -> None:
        self.source = source
        self.sender = sender
        self.unbuildable = 0

    @classmethod
    def from_settings(cls, settings: Settings, *,
                      on_drop: Callable[[str], None] | None = None) -> AtnaExporter | None:
        """None when no audit repository is configured (``audit_syslog_host`` unset)."""
        sender = SyslogSender.from_settings(settings, on_drop=on_drop)
        if sender is None:
            return None
        return cls(AuditSource.from_settings(settings), sender)

    def __repr__(self) -> str:
        return f"AtnaExporter({self.source.source_id!r}, {self.sender!r})"

    def send(self, message: AtnaMessage) -> bool:
        return self.sender.submit(message.xml, severity=message.severity)

    def event(self, kind: str, *, actor: str, details: Mapping[str, Any],
              disclosed_patient_id: str | None = None) -> bool:
        """Queue the ATNA message for one audit-store event; False when there is none for this
        kind, or it was dropped."""
        try:
            message = message_for(kind, actor=actor, details=details, source=self.source,
                                  disclosed_patient_id=disclosed_patient_id)
        except (KeyError, TypeError, ValueError) as exc:  # never the value: it may be PHI
            self.unbuildable += 1
            log.warning("no ATNA message for a %s event: %s", kind, type(exc).__name__)
            if self.sender.on_drop is not None:
                self.sender.on_drop("unbuildable")
            return False
        return message is not None and self.send(message)

    def close(self, timeout: float = 5.0) -> None:
        self.sender.close(timeout)


# --- the process's exporter ---------------------------------------------------------------------

_current: AtnaExporter | None = None
_lock = threading.Lock()
_PENDING = "deidgate_atna_pending"


def configure(settings: Settings, *, on_drop: Callable[[str], None] | None = None,
              announce: bool = True) -> AtnaExporter | None:
    """Install this process's exporter (replacing an earlier one); None when not configured.
    ``announce``: send Application Start now and Application Stop at exit (services; a CLI
    command is not an application start). What is queued is flushed at exit either way."""
    global _current
    exporter = AtnaExporter.from_settings(settings, on_drop=on_drop)
    with _lock:
        old, _current = _current, exporter
    if old is not None:
        old.close(1.0)
    if exporter is not None:
        if announce:
            exporter.send(application_activity(exporter.source, started=True))
        atexit.register(_stop, exporter, announce)
    return exporter


def _stop(exporter: AtnaExporter, announce: bool) -> None:
    if announce:
        exporter.send(application_activity(exporter.source, started=False))
    exporter.close()


def current() -> AtnaExporter | None:
    return _current


def reset() -> None:
    """Close and forget the exporter (tests; a process that reconfigures)."""
    global _current
    with _lock:
        old, _current = _current, None
    if old is not None:
        old.close(2.0)


def send(message_factory: Callable[[AuditSource], AtnaMessage]) -> None:
    """Build and queue a message when an exporter is installed; never raises."""
    exporter = _current
    if exporter is None:
        return
    try:
        exporter.send(message_factory(exporter.source))
    except Exception as exc:  # an audit message must never break the work it describes
        log.warning("ATNA message not built: %s", type(exc).__name__)
        if exporter.sender.on_drop is not None:
            exporter.sender.on_drop("unbuildable")


def pending(session: Session, kind: str, *, actor: str, details: Mapping[str, Any]) -> None:
    """Queue an audit-store event on ``session``; sent when it commits (see the module doc)."""
    if _current is None:
        return
    session.info.setdefault(_PENDING, []).append((kind, actor, dict(details)))


@sa_event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    events = session.info.pop(_PENDING, None)
    exporter = _current
    if not events or exporter is None:
        return
    for kind, actor, details in events:
        exporter.event(kind, actor=actor, details=details)


@sa_event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


class AssociationTally:
    """Instances received per association and study (keyed study hashes and SOP class counts),
    sent as one Instances Transferred message per study when the association ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, tuple[str, str, dict[str, dict[str, int]]]] = {}

    def add(self, assoc: Any, *, calling_ae: str, peer_host: str, study_key: str,
            sop_class: str) -> None:
        if _current is None:
            return
        with self._lock:
            _, _, studies = self._open.setdefault(id(assoc), (calling_ae, peer_host, {}))
            per = studies.setdefault(study_key, {})
            per[sop_class] = per.get(sop_class, 0) + 1

    def ended(self, assoc: Any, *, ok: bool = True) -> None:
        with self._lock:
            entry = self._open.pop(id(assoc), None)
        if entry is None:
            return
        calling, peer, studies = entry
        for study_key, classes in studies.items():
            send(functools.partial(
                instances_received, calling_ae=calling, peer_host=peer, study_key=study_key,
                sop_classes=classes, ok=ok, reason=None if ok else "association-aborted"))
