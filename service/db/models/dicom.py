"""The DICOM edge's tables: local AE settings, PACS nodes, the calling-AE allow-list, received
instances and refused association attempts.

Original UIDs never reach these tables: instances are identified by keyed hashes
(``service.dicom.uid_keys.uid_key``), which are enough for idempotency and completeness checks and
useless to anyone without the site key. Spool file names are random.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base, StrEnumType, utcnow
from service.db.states import ReceivedStatus

TS = DateTime(timezone=True)


class LocalAE(Base):
    """The gateway's own AE (one row, id 1); seeded from settings on first use."""

    __tablename__ = "dicom_local_ae"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ae_title: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    max_pdu: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(TS, default=utcnow, onupdate=utcnow)


class PacsNode(Base):
    __tablename__ = "dicom_pacs_nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    ae_title: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    retrieve: Mapped[str] = mapped_column(String(8), default="move")  # move | get
    max_associations: Mapped[int] = mapped_column(Integer, default=2)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class AllowedCaller(Base):
    """A calling AE title allowed to associate; ``host`` pins it to one peer address."""

    __tablename__ = "dicom_allowed_callers"
    __table_args__ = (
        UniqueConstraint("ae_title", "host", name="uq_dicom_allowed_callers_ae_host"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ae_title: Mapped[str] = mapped_column(String(16), index=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class ReceivedInstance(Base):
    """One instance durably in the spool (status: ``service.db.states.ReceivedStatus``)."""

    __tablename__ = "dicom_received_instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sop_key: Mapped[str] = mapped_column(String(64), unique=True)
    series_key: Mapped[str] = mapped_column(String(64), index=True)
    study_key: Mapped[str] = mapped_column(String(64), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))  # a standard class, not PHI
    transfer_syntax: Mapped[str] = mapped_column(String(64))
    spool_path: Mapped[str] = mapped_column(String(1024))
    # the host whose spool holds the file (``queues.node_name``): its de-identification is
    # routed to ``deid.<node>`` whoever enqueues it (a sweep, a retry on another host)
    node: Mapped[str] = mapped_column(String(64), index=True)
    calling_ae: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(TS, default=utcnow, index=True)
    status: Mapped[ReceivedStatus] = mapped_column(StrEnumType(ReceivedStatus, 16),
                                                   default=ReceivedStatus.RECEIVED, index=True)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class AssociationLease(Base):
    """One open association to a PACS, held by one process on one host until ``expires_at``
    (renewed while it lasts). The per-node association limit is the number of slots: a slot is
    taken by a conditional insert, or an update of an expired lease (its holder died), so every
    process on every host counts against the same limit."""

    __tablename__ = "dicom_association_leases"

    peer: Mapped[str] = mapped_column(String(160), primary_key=True)  # "AE@host:port"
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder: Mapped[str] = mapped_column(String(96))  # host:pid:random, for the operator
    expires_at: Mapped[datetime] = mapped_column(TS)


class AssociationAttempt(Base):
    """A refused association (who tried, from where, why); holds no patient data."""

    __tablename__ = "dicom_association_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    calling_ae: Mapped[str] = mapped_column(String(16))
    called_ae: Mapped[str] = mapped_column(String(16))
    peer_host: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(TS, default=utcnow, index=True)
