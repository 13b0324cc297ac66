"""Extraction jobs, their studies and instances, dead-lettered tasks.

Revision ID: 0006_jobs
Revises: 0001_base
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_jobs"
down_revision = "0001_base"
branch_labels = ("jobs",)
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("pacs", sa.String(64), nullable=False),
        sa.Column("policy", sa.String(128), nullable=False),
        sa.Column("destination", sa.String(64), nullable=True),
        sa.Column("selector", sa.String(32), nullable=False),
        sa.Column("requested", sa.Integer, nullable=False),
        sa.Column("request_sealed", sa.LargeBinary, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_table(
        "job_studies",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE",
                  name="fk_job_studies_job_id_jobs"), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("study_key", sa.String(64), nullable=False),
        sa.Column("uid_sealed", sa.LargeBinary, nullable=False),
        sa.Column("pseudo_uid", sa.String(64), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("expected", sa.Integer, nullable=True),
        sa.Column("retrieved", sa.Boolean, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("forwarded", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("job_id", "idx", name="uq_job_studies_job_idx"),
    )
    op.create_index("ix_job_studies_job_id", "job_studies", ["job_id"])
    op.create_index("ix_job_studies_study_key", "job_studies", ["study_key"])
    op.create_table(
        "job_instances",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("received_key", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE",
                  name="fk_job_instances_job_id_jobs"), nullable=True),
        sa.Column("study_id", sa.Integer, sa.ForeignKey("job_studies.id", ondelete="CASCADE",
                  name="fk_job_instances_study_id_job_studies"), nullable=True),
        sa.Column("spool_path", sa.Text, nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("out_path", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("claimed_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("job_id", "received_key", name="uq_job_instances_job_received"),
    )
    op.create_index("ix_job_instances_job_id", "job_instances", ["job_id"])
    op.create_index("ix_job_instances_received_key", "job_instances", ["received_key"])
    op.create_index("ix_job_instances_study_id", "job_instances", ["study_id"])
    op.create_index("ix_job_instances_state", "job_instances", ["state"])
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("retried_at", TS, nullable=True),
    )
    op.create_index("ix_dead_letters_job_id", "dead_letters", ["job_id"])


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_table("job_instances")
    op.drop_table("job_studies")
    op.drop_table("jobs")
