"""Triage worklist entries (filled by the scoring worker).

Revision ID: 0005_triage
Revises: 0001_base
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_triage"
down_revision = "0001_base"
branch_labels = ("triage",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "triage_entries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("exam", sa.String(64), nullable=False),
        sa.Column("patient_pseudonym", sa.String(64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_triage_entries"),
        sa.UniqueConstraint("exam", name="uq_triage_entries_exam"),
        sa.CheckConstraint(
            "category IN ('likely-normal', 'standard', 'priority')",
            name="category",
        ),
    )
    op.create_index(
        "ix_triage_entries_patient_pseudonym", "triage_entries", ["patient_pseudonym"]
    )
    op.create_index("ix_triage_entries_score", "triage_entries", ["score"])


def downgrade() -> None:
    op.drop_index("ix_triage_entries_score", table_name="triage_entries")
    op.drop_index("ix_triage_entries_patient_pseudonym", table_name="triage_entries")
    op.drop_table("triage_entries")
