"""The audit store: the only link from pseudonyms back to patients, and its audit trail.

Everything runs inside the caller's session and transaction (the pipeline commits the mappings
together with "instance done"), except ``lookup``: a re-identification is committed to the log
before any original is decrypted, so no caller can see an identity without leaving a record.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Insert, select
from sqlalchemy.orm import Session

from service.audit import atna_export, chain, stored
from service.audit.crypto import (
    NAMESPACES,
    decrypt_original,
    encrypt_original,
    lookup_hash,
    namespace_of,
)
from service.audit.types import MAPPING_KINDS, EventView, MappingInfo, RecordedOutcome
from service.core.errors import DeidgateError, PolicyRefused, SiteKeyError
from service.core.keys import SITE_SEAL_ID, SealKey, SiteKeys
from service.db.base import as_utc, utcnow
from service.db.models.audit import AuditMapping, AuditSealKey

_KIND_ORDER: dict[str, int] = {k: i for i, k in enumerate(MAPPING_KINDS)}


class PseudonymCollision(PolicyRefused):
    """Two different originals map to one pseudonym. The instance is refused (fail closed):
    writing it would merge two patients (or two studies) in the research data."""

    code = "pseudonym-collision"


class LookupRefused(DeidgateError):
    """A re-identification request without a reason or operator is refused."""

    code = "lookup-refused"


def _event_view(e: stored.StoredEvent) -> EventView:
    details = stored.parse_details(e.details)
    shown = ("seq", "at", "kind", "actor", "details")
    unreadable = tuple(c for c in shown if c in e.unreadable
                       or (c == "details" and details is None))
    return EventView(e.seq, e.at, e.kind or "", e.actor or "", details, unreadable)


class AuditStore:
    def __init__(self, session: Session, keys: SiteKeys) -> None:
        self.session = session
        self.keys = keys

    def __repr__(self) -> str:
        return f"AuditStore(keys={self.keys!r})"

    # -- sealing keys ----------------------------------------------------------------------

    def active_seal(self) -> SealKey:
        """The sealing key new rows use (``audit_seal_keys.active``), checked against the key
        file this host holds: a missing key, or a different key under a known id, refuses to
        seal anything (fail closed) rather than write rows nobody can open."""
        row = self.session.scalars(select(AuditSealKey).where(AuditSealKey.active)).first()
        key_id = row.key_id if row is not None else SITE_SEAL_ID
        seal = self.keys.seal(key_id)
        if row is not None and row.fingerprint and row.fingerprint != seal.fingerprint:
            raise SiteKeyError(f"sealing key {key_id!r} on this host is not the one registered "
                               "(fingerprint differs); copy the right seal file here")
        return seal

    # -- recording -------------------------------------------------------------------------

    def record_outcome(self, outcome: RecordedOutcome, *, source: str, job_id: str | None) -> None:
        """Record every mapping of ``outcome`` and a "deidentified" event (pseudonyms only).

        Idempotent per (kind, pseudonym): a re-run inserts nothing new. Raises
        ``PseudonymCollision`` when a stored row (or another mapping of this outcome) gives the
        same pseudonym to a different original; the caller's transaction must then roll back.
        """
        chain.lock(self.session)  # head first, so concurrent recorders cannot deadlock
        wanted: dict[tuple[str, str], str] = {}
        for m in outcome.mappings:
            namespace_of(m.kind)  # rejects unknown kinds
            key = (m.kind, m.pseudonym)
            if key in wanted and wanted[key] != m.original:
                raise PseudonymCollision(f"{m.kind} pseudonym {m.pseudonym} is given to two "
                                         "different originals within one instance")
            wanted[key] = m.original
        seal = self.active_seal()
        hashes = {k: lookup_hash(seal, kind=k[0], original=v) for k, v in wanted.items()}
        now = utcnow()
        new = 0
        for kind, pseudonym in sorted(wanted, key=lambda k: (_KIND_ORDER[k[0]], k[1])):
            values = {
                "kind": kind,
                "namespace": namespace_of(kind),
                "pseudonym": pseudonym,
                "lookup_hash": hashes[(kind, pseudonym)],
                "original_ct": encrypt_original(seal, kind=kind, pseudonym=pseudonym,
                                                original=wanted[(kind, pseudonym)]),
                "key_id": seal.key_id,
                "patient_pseudonym": outcome.patient_pseudonym or None,
                "policy_name": outcome.policy_name,
                "policy_version": outcome.policy_version,
                "source": source[:256],
                "job_id": job_id,
                "created_at": now,
            }
            # RETURNING, not rowcount: a skipped conflict returns no row on both dialects
            inserted = self.session.execute(self._insert_ignore(values)).first()
            new += inserted is not None
        self._check_collisions(wanted, hashes, seal)
        self.log_event("deidentified", actor="deidgate", details={
            "patient": outcome.patient_pseudonym,
            "study": outcome.study_instance_uid,
            "series": outcome.series_instance_uid,
            "instance": outcome.sop_instance_uid,
            "sop_class": outcome.sop_class_uid,
            "policy": outcome.policy_name,
            "policy_version": outcome.policy_version,
            "source": source,
            "job_id": job_id,
            "mappings": len(wanted),
            "new_mappings": new,
            "pixels": outcome.pixel.action if outcome.pixel else None,
            "pixel_regions": len(outcome.pixel.regions) if outcome.pixel else 0,
        })

    def _insert_ignore(self, values: dict[str, Any]) -> Insert:
        dialect = self.session.get_bind().dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(AuditMapping).values(**values).on_conflict_do_nothing(
                index_elements=["kind", "pseudonym"]).returning(AuditMapping.id)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(AuditMapping).values(**values).on_conflict_do_nothing(
            index_elements=["kind", "pseudonym"]).returning(AuditMapping.id)

    def _check_collisions(self, wanted: dict[tuple[str, str], str],
                          hashes: dict[tuple[str, str], str], seal: SealKey) -> None:
        """Every stored row sharing a namespace and pseudonym must carry the same original.

        ``hashes`` are under ``seal`` (the active key, read once by ``record_outcome``). A
        stored row's lookup hash is under that row's sealing key, so for a row under another
        key the original is hashed again under it (rows sealed before a rotation are compared
        like any other)."""
        by_ns: dict[str, dict[str, tuple[str, str]]] = {}
        for (kind, pseudonym), digest in hashes.items():
            seen = by_ns.setdefault(namespace_of(kind), {})
            first = seen.setdefault(pseudonym, (digest, wanted[(kind, pseudonym)]))
            if first[0] != digest:
                raise PseudonymCollision(f"{kind} pseudonym {pseudonym} is given to two "
                                         "different originals within one instance")
        everything = {p for ns in by_ns.values() for p in ns}
        rows = self.session.execute(
            select(AuditMapping.kind, AuditMapping.namespace, AuditMapping.pseudonym,
                   AuditMapping.lookup_hash, AuditMapping.key_id)
            .where(AuditMapping.pseudonym.in_(everything)))
        for kind, ns, pseudonym, digest, key_id in rows:  # one query for every namespace
            expected = by_ns.get(ns, {}).get(pseudonym)
            if expected is None:
                continue
            want = expected[0] if key_id == seal.key_id else lookup_hash(
                self.keys.seal(key_id), kind=kind, original=expected[1])
            if digest != want:
                raise PseudonymCollision(
                    f"{kind} pseudonym {pseudonym} already maps to a different original")

    def log_event(self, kind: str, *, actor: str, details: dict[str, Any],
                  export: bool = True) -> None:
        """Append a hash-chained event. ``details`` must hold no PHI: pseudonyms, counts, codes.

        Also sent to the hospital's audit repository (ATNA over syslog) when the transaction
        commits, where one is configured (service.audit.atna_export)."""
        chain.append(self.session, self.keys, kind, actor=actor, details=details)
        if export:
            atna_export.pending(self.session, kind, actor=actor, details=details)

    # -- re-identification -----------------------------------------------------------------

    def lookup(self, pseudonym: str, *, reason: str, actor: str, kind: str | None = None,
               context: dict[str, str] | None = None) -> list[tuple[str, str]]:
        """Re-identify: [(kind, original)] for ``pseudonym``. Commits the "reidentify" event
        (operator, reason, pseudonym, match count) *before* decrypting anything. The reason
        is stored in clear like every event detail: callers ask for a ticket or purpose, not
        for identifying text. ``kind``: only that kind's mapping is looked up and decrypted
        (the worklist's accession reveal); ``context``: more event details (no PHI)."""
        if not reason or not reason.strip():
            raise LookupRefused("a re-identification needs a reason")
        if not actor or not actor.strip():
            raise LookupRefused("a re-identification needs an operator name")
        where = [AuditMapping.pseudonym == pseudonym]
        if kind is not None:
            where.append(AuditMapping.kind == kind)
        rows = self.session.execute(
            select(AuditMapping.kind, AuditMapping.pseudonym, AuditMapping.original_ct,
                   AuditMapping.key_id)
            .where(*where).order_by(AuditMapping.id)
        ).all()
        details: dict[str, Any] = {
            "pseudonym": pseudonym,
            "reason": reason.strip(),
            "matches": len(rows),
            "kinds": sorted({r.kind for r in rows}),
            **(context or {}),
        }
        self.log_event("reidentify", actor=actor.strip(), details=details, export=False)
        self.session.commit()
        found = [(kind, decrypt_original(self.keys.seal(key_id), kind=kind, pseudonym=p,
                                         blob=ct)) for kind, p, ct, key_id in rows]
        exporter = atna_export.current()
        if exporter is not None:  # ATNA's Patient object needs the disclosed Patient ID only
            patient = next((o for k, o in found if k == "patient"), None)
            exporter.event("reidentify", actor=actor.strip(), details={
                k: v for k, v in details.items() if k != "reason"},
                disclosed_patient_id=patient)
        return found

    def find_pseudonyms(self, kind: str, original: str, *, reason: str, actor: str) -> list[str]:
        """Original -> pseudonyms (one per project). Logged like ``lookup``: it links a known
        person to research data. The event names the pseudonyms found, never the original."""
        if not reason or not reason.strip():
            raise LookupRefused("a lookup by original needs a reason")
        # under every sealing key this host holds: rows keep their key until re-keyed
        digests = [lookup_hash(seal, kind=kind, original=original)
                   for seal in self.keys.all_seals()]
        found = list(self.session.scalars(
            select(AuditMapping.pseudonym).where(
                AuditMapping.namespace == namespace_of(kind), AuditMapping.kind == kind,
                AuditMapping.lookup_hash.in_(digests)).order_by(AuditMapping.id)))
        self.log_event("lookup-original", actor=actor, details={
            "kind": kind, "reason": reason.strip(), "pseudonyms": found})
        self.session.commit()
        return found

    def export_mapping(self, kind: str) -> Iterator[tuple[str, str]]:
        """(id_old, id_new) for every mapping of ``kind``, oldest first (the MIDI-B CSV rows).
        The caller logs the export (who, which kind, how many) before writing it anywhere."""
        if kind not in NAMESPACES:
            raise ValueError(f"unknown mapping kind {kind!r}")
        stmt = (select(AuditMapping.pseudonym, AuditMapping.original_ct, AuditMapping.key_id)
                .where(AuditMapping.kind == kind).order_by(AuditMapping.id)
                .execution_options(yield_per=2000))
        for pseudonym, ct, key_id in self.session.execute(stmt):
            yield (decrypt_original(self.keys.seal(key_id), kind=kind, pseudonym=pseudonym,
                                    blob=ct), pseudonym)

    def count_mappings(self, kind: str) -> int:
        from sqlalchemy import func

        return int(self.session.scalar(
            select(func.count()).select_from(AuditMapping).where(AuditMapping.kind == kind)) or 0)

    # -- auditors' queries (no originals) --------------------------------------------------

    def mappings(self, pseudonym: str | None = None, *,
                 patient: str | None = None) -> list[MappingInfo]:
        stmt = select(AuditMapping).order_by(AuditMapping.id)
        if pseudonym is not None:
            stmt = stmt.where(AuditMapping.pseudonym == pseudonym)
        if patient is not None:
            stmt = stmt.where(AuditMapping.patient_pseudonym == patient)
        return [MappingInfo(m.kind, m.pseudonym, m.patient_pseudonym, m.policy_name,
                            m.policy_version, m.source, m.job_id, as_utc(m.created_at))
                for m in self.session.scalars(stmt)]

    def events(self, kind: str | None = None, *, limit: int | None = None) -> list[EventView]:
        """Newest last; ``limit`` keeps the newest ``limit`` events. Columns are read as stored
        text (service.audit.stored), so an edited row is flagged, never a crash."""
        rows = list(stored.read_events(self.session, kind=kind, limit=limit, newest_first=True))
        rows.reverse()
        return [_event_view(e) for e in rows]

    def reidentifications(self) -> list[EventView]:
        """Who re-identified whom (the pseudonym) and why."""
        return self.events("reidentify")

    def verify_chain(self, *, anchors: Sequence[tuple[int, str]] = ()) -> chain.ChainReport:
        """See chain.verify; ``anchors`` are (seq, hash) heads recorded outside the database."""
        return chain.verify(self.session, self.keys, anchors=anchors)
