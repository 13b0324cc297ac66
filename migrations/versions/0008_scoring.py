"""Scoring: score_results (every scoring of an exam by a model) and the worklist's new columns.

Existing triage_entries rows keep their values; they get no result_id (nothing to point at) and
arrived_at = now (the best that is known).

Revision ID: 0008_scoring
Revises: 0005_triage
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_scoring"
down_revision = "0005_triage"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
FK = "fk_triage_entries_result_id_score_results"


def upgrade() -> None:
    op.create_table(
        "score_results",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("exam", sa.String(64), nullable=False),
        sa.Column("patient_pseudonym", sa.String(64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("device_uid", sa.String(64), nullable=False),
        sa.Column("preprocessing_version", sa.String(32), nullable=False),
        sa.Column("demo", sa.Boolean(), nullable=False),
        sa.Column("views", sa.JSON(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("note", sa.String(200), nullable=True),
        sa.Column("scored_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_score_results"),
        sa.UniqueConstraint("exam", "model_sha256", name="uq_score_results_exam"),
        sa.CheckConstraint(
            "category IN ('likely-normal', 'standard', 'priority')", name="category"
        ),
    )
    op.create_index("ix_score_results_exam", "score_results", ["exam"])
    with op.batch_alter_table("triage_entries") as batch:
        batch.add_column(sa.Column("result_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("accession_pseudonym", sa.String(64), nullable=True))
        batch.add_column(sa.Column("arrived_at", TS, nullable=False, server_default=sa.func.now()))
        batch.add_column(sa.Column("read_at", TS, nullable=True))
        batch.add_column(sa.Column("read_by", sa.String(64), nullable=True))
        batch.create_foreign_key(FK, "score_results", ["result_id"], ["id"], ondelete="SET NULL")
        batch.create_index("ix_triage_entries_result_id", ["result_id"])


def downgrade() -> None:
    with op.batch_alter_table("triage_entries") as batch:
        batch.drop_index("ix_triage_entries_result_id")
        batch.drop_constraint(FK, type_="foreignkey")
        for column in ("read_by", "read_at", "arrived_at", "accession_pseudonym", "result_id"):
            batch.drop_column(column)
    op.drop_index("ix_score_results_exam", table_name="score_results")
    op.drop_table("score_results")
