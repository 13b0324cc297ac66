"""The triage worklist: one row per de-identified exam, as last scored.

Only pseudonymous identifiers live here (the exam is its pseudonymous StudyInstanceUID), so the
worklist can be shown to screening staff. ``exam`` is unique: re-scoring with a newer model
replaces the row, and ``model_version`` says which model produced what staff see.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base, utcnow

CATEGORIES = ("likely-normal", "standard", "priority")


class TriageEntry(Base):
    __tablename__ = "triage_entries"
    __table_args__ = (
        CheckConstraint(
            "category IN ('likely-normal', 'standard', 'priority')", name="category"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    exam: Mapped[str] = mapped_column(String(64), unique=True)
    patient_pseudonym: Mapped[str] = mapped_column(String(64), index=True)
    score: Mapped[float] = mapped_column(Float, index=True)
    category: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[str] = mapped_column(String(64))
    scored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def __repr__(self) -> str:
        return f"TriageEntry(exam={self.exam!r}, score={self.score!r}, category={self.category!r})"
