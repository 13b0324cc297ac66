"""The one object the rest of the gateway talks to for ATNA export: builds the message for an
audit event and queues it on the syslog sender, never raising into the caller.

Wiring (later, by the audit store and the DICOM edge):
- ``AuditStore.log_event(kind, actor, details)`` calls ``exporter.event(kind, actor=...,
  details=...)`` after appending to the chain; ``lookup`` calls it for ``reidentify`` with
  ``disclosed_patient_id`` once it has decrypted the patient row;
- the listener calls ``exporter.send(atna_events.association_refused(...))`` and
  ``instances_received(...)`` at association end; the SCU ``query``/``retrieve_started``/
  ``retrieved``; the forwarder ``forwarded``; each process ``application_activity`` at start
  and stop.

An audit message that cannot be built (a malformed detail) is logged by type and counted as
dropped: the audit chain in the database stays the record of truth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from service.audit.atna import AtnaMessage, AuditSource
from service.audit.atna_events import message_for
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
