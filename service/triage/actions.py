"""What staff do to a worklist exam: mark it read, reveal its accession number on record.

- ``mark_read`` records who read it and when (``read_at``/``read_by``) and a hash-chained
  ``triage-read`` event; the first reader stays recorded (a second mark changes nothing), so
  the time waiting of an exam is never rewritten.
- ``reveal_accession`` is a re-identification: clinical follow-up needs the accession number
  the PACS knows. It needs a reason (the audit lookup's rule: ten characters, two words) and
  the caller's confirmation, and writes a ``reidentify`` event (actor, reason, the accession
  pseudonym, the exam) that is COMMITTED before the original is decrypted, exactly like the
  auditors' lookup, so it appears in the auditors' re-identification log. Only the
  ``accession`` mapping of that pseudonym is decrypted. The original is returned to the caller
  and never logged, stored elsewhere or put in an exception message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.audit.store import AuditStore
from service.core.errors import DeidgateError
from service.core.keys import SiteKeys
from service.db.base import utcnow
from service.db.models.triage import TriageEntry

REASON_MIN = 10
REASON_MAX = 500
# At least two words, as the auditors' lookup asks (service.api.schemas.LookupRequest).
TWO_WORDS = re.compile(r"[!-~] +[!-~]")
PURPOSE = "clinical follow-up from the triage worklist"


class ExamUnknown(DeidgateError):
    code = "exam-unknown"


class AccessionUnknown(DeidgateError):
    """The exam has no accession pseudonym, or no mapping holds it (the attempt is recorded)."""

    code = "accession-unknown"


class RevealRefused(DeidgateError):
    """No reason, a reason too short, or no confirmation: nothing is looked up."""

    code = "lookup-refused"


@dataclass(frozen=True)
class ReadState:
    exam: str
    read_at: datetime
    read_by: str
    already: bool  # someone had marked it read before this call


def check_reason(reason: str) -> str:
    """The reason as it will be recorded (stripped), or ``RevealRefused`` saying what is
    missing. The rule is the API schema's, on the value as sent: 10-500 characters holding
    two words."""
    text = reason or ""
    if not REASON_MIN <= len(text) <= REASON_MAX or not TWO_WORDS.search(text):
        raise RevealRefused(f"give a reason of {REASON_MIN}-{REASON_MAX} characters and at least "
                            "two words (ticket, protocol, purpose)")
    return text.strip()


def _entry(session: Session, exam: str) -> TriageEntry:
    entry = session.scalar(select(TriageEntry).where(TriageEntry.exam == exam))
    if entry is None:
        raise ExamUnknown("no worklist exam has this UID")
    return entry


def mark_read(session: Session, keys: SiteKeys, exam: str, *, actor: str,
              now: datetime | None = None) -> ReadState:
    """Mark ``exam`` read by ``actor`` (commits). Idempotent: the first reader is kept."""
    store = AuditStore(session, keys)
    entry = _entry(session, exam)
    if entry.read_at is not None:
        return ReadState(exam, entry.read_at, entry.read_by or "", already=True)
    # Conditional UPDATE: two readers at once, one wins, the other sees "already".
    at = now or utcnow()
    won = session.execute(
        update(TriageEntry)
        .where(TriageEntry.id == entry.id, TriageEntry.read_at.is_(None))
        .values(read_at=at, read_by=actor[:64])
        .returning(TriageEntry.id)
    ).first()
    if won is None:
        session.rollback()
        entry = _entry(session, exam)
        assert entry.read_at is not None
        return ReadState(exam, entry.read_at, entry.read_by or "", already=True)
    store.log_event("triage-read", actor=actor, details={
        "exam": exam, "result_id": entry.result_id, "model_version": entry.model_version,
        "category": entry.category})
    session.commit()
    return ReadState(exam, at, actor[:64], already=False)


def reveal_accession(session: Session, keys: SiteKeys, exam: str, *, reason: str,
                     confirmed: bool, actor: str) -> str:
    """The original accession number of ``exam``, after the event is committed."""
    text = check_reason(reason)
    if not confirmed:
        raise RevealRefused("confirm that the accession number is needed for the reason given")
    if not actor or not actor.strip():
        raise RevealRefused("a re-identification needs an operator name")
    entry = _entry(session, exam)
    # AuditStore.lookup commits the event before it decrypts, under the row's sealing key
    found = AuditStore(session, keys).lookup(
        entry.accession_pseudonym or "", reason=text, actor=actor, kind="accession",
        context={"exam": exam, "purpose": PURPOSE})
    if not found:
        raise AccessionUnknown("no accession number is recorded for this exam "
                               "(the request was recorded)")
    return found[0][1]
