"""Extraction jobs: the job, its studies, its instances and dead-lettered tasks.

States are the enums of ``service.db.states`` (stored as their strings). State lives here, not in
the broker: a broker (or worker) that loses messages loses nothing,
because the sweep re-enqueues whatever these rows say is unfinished. Nothing here holds PHI in
clear: the request and the original study UIDs (needed to C-MOVE) are AES-GCM sealed with the
site key, and studies are found by a keyed hash of their UID.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base, StrEnumType, utcnow
from service.db.states import DeadLetterState, InstanceState, JobState, StudyState


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[JobState] = mapped_column(StrEnumType(JobState, 20), index=True,
                                            default=JobState.QUEUED)
    pacs: Mapped[str] = mapped_column(String(64))
    policy: Mapped[str] = mapped_column(String(128))
    destination: Mapped[str | None] = mapped_column(String(64), nullable=True)
    selector: Mapped[str] = mapped_column(String(32))  # which kind of request; not the values
    requested: Mapped[int] = mapped_column(Integer, default=0)  # how many values were asked for
    # the job option: retrieve only series of these modalities ("MG,CT"); None: the policy's
    modalities: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_sealed: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM, site encryption key
    actor: Mapped[str] = mapped_column(String(128), default="")
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class JobStudy(Base):
    __tablename__ = "job_studies"
    __table_args__ = (
        UniqueConstraint("job_id", "idx", name="uq_job_studies_job_idx"),
        Index("ix_job_studies_study_key", "study_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    study_key: Mapped[str] = mapped_column(String(64))  # keyed hash of the original study UID
    uid_sealed: Mapped[bytes] = mapped_column(LargeBinary)  # original study UID, for C-MOVE
    pseudo_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[StudyState] = mapped_column(StrEnumType(StudyState, 20),
                                              default=StudyState.PENDING)
    expected: Mapped[int | None] = mapped_column(Integer, nullable=True)
    retrieved: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    forwarded: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # instances in series the retrieval did not move (filter), and why, per series
    skipped: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    skipped_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class JobInstance(Base):
    """One received instance's way through de-identification (one row per spool file)."""

    __tablename__ = "job_instances"
    __table_args__ = (
        UniqueConstraint("job_id", "received_id", name="uq_job_instances_job_received"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_id: Mapped[int] = mapped_column(
        ForeignKey("dicom_received_instances.id"), index=True
    )
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True, nullable=True
    )
    study_id: Mapped[int | None] = mapped_column(
        ForeignKey("job_studies.id", ondelete="CASCADE"), index=True, nullable=True
    )
    spool_path: Mapped[str] = mapped_column(Text)
    node: Mapped[str] = mapped_column(String(64), default="")  # host whose spool holds the file
    state: Mapped[InstanceState] = mapped_column(StrEnumType(InstanceState, 20),
                                                 default=InstanceState.PENDING, index=True)
    out_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class DeadLetter(Base):
    """A task that kept failing: kept with its reason until an operator retries it."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(64))  # the id the task was given
    job_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[DeadLetterState] = mapped_column(StrEnumType(DeadLetterState, 16),
                                                   default=DeadLetterState.DEAD)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    retried_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
