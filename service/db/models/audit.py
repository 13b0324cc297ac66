"""Audit tables: pseudonym mappings (originals encrypted) and the hash-chained event log.

A dump of these tables alone reveals no PHI: originals are AES-256-GCM ciphertexts and the only
clear value derived from them is a keyed HMAC (``lookup_hash``) that nobody without the site key
can test guesses against. Pseudonyms, policy, provenance and event details are clear text so
auditors can query them without decrypting anything.

``audit_chain_head`` is a one-row table holding the last appended ``seq`` and ``hash``: appenders
lock it to serialize (one linear chain), and verification compares it with the last event so a
truncated tail is detected too.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base, utcnow

GENESIS_HASH = "0" * 64


class AuditMapping(Base):
    """One original identifier -> pseudonym. Unique per (kind, pseudonym): re-recording is a
    no-op and a second original claiming the same pseudonym is a detectable collision."""

    __tablename__ = "audit_mappings"
    __table_args__ = (
        UniqueConstraint("kind", "pseudonym", name="uq_audit_mappings_kind_pseudonym"),
        Index("ix_audit_mappings_pseudonym", "pseudonym"),
        Index("ix_audit_mappings_namespace_lookup", "namespace", "lookup_hash"),
        Index("ix_audit_mappings_patient", "patient_pseudonym"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    # patient | uid | accession: kinds whose pseudonyms share one value space (every UID kind
    # maps into 2.25.x), so a collision across study/series/instance is caught as well.
    namespace: Mapped[str] = mapped_column(String(16))
    pseudonym: Mapped[str] = mapped_column(String(128))
    lookup_hash: Mapped[str] = mapped_column(String(64))
    original_ct: Mapped[bytes] = mapped_column(LargeBinary)  # 12-byte nonce || ciphertext+tag
    # the sealing key of original_ct and lookup_hash (service.core.keys.SealKey); "site" for
    # the rows sealed before rotation existed. Re-keying updates only these three columns.
    key_id: Mapped[str] = mapped_column(String(32), default="site", server_default="site")
    patient_pseudonym: Mapped[str | None] = mapped_column(String(128), nullable=True)
    policy_name: Mapped[str] = mapped_column(String(128), default="")
    policy_version: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[str] = mapped_column(String(256), default="")
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def __repr__(self) -> str:  # never the ciphertext or lookup hash
        return f"AuditMapping(kind={self.kind!r}, pseudonym={self.pseudonym!r})"


class AuditEvent(Base):
    """Append-only; ``hash`` chains each row to ``prev_hash`` (see service.audit.chain)."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_kind", "kind"),
        Index("ix_audit_events_hash", "hash"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128))
    details: Mapped[str] = mapped_column(Text)  # canonical JSON, hashed exactly as stored
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditSealKey(Base):
    """The sealing keys the site has made, and which one new mapping rows use (one ``active``).

    The key material stays in files (``seal-<id>.key``, 0600) on each host; this table makes
    activation one switch for every host, and its fingerprint catches a different key file
    under a known id before it seals anything."""

    __tablename__ = "audit_seal_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(16), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                          nullable=True)


class AuditChainHead(Base):
    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    hash: Mapped[str] = mapped_column(String(64), default=GENESIS_HASH)


__all__ = ["GENESIS_HASH", "AuditChainHead", "AuditEvent", "AuditMapping", "AuditSealKey"]
