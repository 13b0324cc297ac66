"""Scoring results and the triage worklist built on them.

Only pseudonymous identifiers live here (the exam is its pseudonymous StudyInstanceUID), so the
worklist can be shown to screening staff.

``score_results`` keeps every scoring of an exam by a model: re-scoring with another model adds a
row and never overwrites the old one, so two models can be compared on the same exams and an
answer given to staff can always be traced to the model (by sha256) that produced it.

``triage_entries`` is the worklist row, one per exam. ``result_id`` points at the result staff
see (the active model's); ``score``, ``category``, ``model_version`` and ``scored_at`` mirror that
result so the worklist sorts without a join. ``arrived_at`` is when the exam's last view was
de-identified: the time an exam has waited is counted from there, not from when it was scored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base, utcnow

CATEGORIES = ("likely-normal", "standard", "priority")
_CATEGORY_CHECK = "category IN ('likely-normal', 'standard', 'priority')"


class ScoreResult(Base):
    """One scoring of one exam by one model (identified by the sha256 of its weights).

    ``views`` is a list of ``{"sop", "series", "laterality", "view", "score", "file"}`` with
    pseudonymous UIDs and the file's path relative to the output folder. ``demo`` marks results
    of the synthetic demo model, which every surface must label as not for clinical use.
    """

    __tablename__ = "score_results"
    __table_args__ = (
        UniqueConstraint("exam", "model_sha256"),
        CheckConstraint(_CATEGORY_CHECK, name="category"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    exam: Mapped[str] = mapped_column(String(64), index=True)
    patient_pseudonym: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    category: Mapped[str] = mapped_column(String(16))
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    model_sha256: Mapped[str] = mapped_column(String(64))
    device_uid: Mapped[str] = mapped_column(String(64))
    preprocessing_version: Mapped[str] = mapped_column(String(32))
    demo: Mapped[bool] = mapped_column(Boolean, default=False)
    views: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    complete: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str | None] = mapped_column(String(200), nullable=True)
    scored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def __repr__(self) -> str:
        return (f"ScoreResult(id={self.id!r}, score={self.score!r}, "
                f"category={self.category!r}, model={self.model_name!r}/{self.model_version!r})")


class TriageEntry(Base):
    __tablename__ = "triage_entries"
    __table_args__ = (CheckConstraint(_CATEGORY_CHECK, name="category"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    exam: Mapped[str] = mapped_column(String(64), unique=True)
    patient_pseudonym: Mapped[str] = mapped_column(String(64), index=True)
    score: Mapped[float] = mapped_column(Float, index=True)
    category: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[str] = mapped_column(String(64))
    scored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Nullable: rows written before score_results existed have no result to point at.
    result_id: Mapped[int | None] = mapped_column(
        ForeignKey("score_results.id", ondelete="SET NULL"), nullable=True, index=True
    )
    accession_pseudonym: Mapped[str | None] = mapped_column(String(64), nullable=True)
    arrived_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    read_by: Mapped[str | None] = mapped_column(String(64), nullable=True)

    def __repr__(self) -> str:
        return f"TriageEntry(exam={self.exam!r}, score={self.score!r}, category={self.category!r})"
