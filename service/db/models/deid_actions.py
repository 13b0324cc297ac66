"""What de-identification did to each instance, by attribute: tag, keyword, action, rule.

The identified copy is deleted after processing, so the auditors' before/after view is recorded
when it happens, in the transaction that commits the instance's mappings. It names attributes
and actions only, never a value. Instances of one kind (one modality, vendor and software) get
identical lists, so each distinct list is stored once (``deid_action_profiles``, keyed by the
SHA-256 of its canonical JSON) and an instance row points at it: a million mammograms cost a
million short rows and a handful of profiles, not a hundred million.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base, utcnow

TS = DateTime(timezone=True)


class DeidActionProfile(Base):
    __tablename__ = "deid_action_profiles"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    rows: Mapped[str] = mapped_column(Text)  # JSON: [[path, tag, keyword, vr, action, rule, via]]
    n_rows: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class DeidInstanceActions(Base):
    """One de-identified instance, by its pseudonymous SOP Instance UID."""

    __tablename__ = "deid_instance_actions"

    sop_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    profile_digest: Mapped[str] = mapped_column(
        ForeignKey("deid_action_profiles.digest", ondelete="RESTRICT"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    policy_name: Mapped[str] = mapped_column(String(128))
    policy_version: Mapped[str] = mapped_column(String(64))
    pixel_action: Mapped[str | None] = mapped_column(String(16), nullable=True)
    pixel_regions: Mapped[int] = mapped_column(Integer, default=0)
    recorded_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
