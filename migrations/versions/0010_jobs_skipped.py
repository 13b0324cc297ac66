"""Series a retrieval skips (issue 7, section 1): jobs.modalities (the job option that
overrides the policy's series filter), job_studies.skipped (instances in series not moved) and
job_studies.skipped_reason (per series: modality, count, why; PHI-free).

Revision ID: 0010_jobs_skipped
Revises: 0009_job_instance_received_id
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_jobs_skipped"
down_revision = "0009_job_instance_received_id"
branch_labels = None
depends_on = None


# Plain ADD/DROP COLUMN, not batch mode: on SQLite a batch copy drops and recreates "jobs",
# and with foreign keys on, ON DELETE CASCADE would empty job_studies and job_instances.
# (SQLite >= 3.35 drops a column in place.)


def upgrade() -> None:
    op.add_column("jobs", sa.Column("modalities", sa.String(200), nullable=True))
    op.add_column("job_studies", sa.Column("skipped", sa.Integer, nullable=False,
                                           server_default="0"))
    op.add_column("job_studies", sa.Column("skipped_reason", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("job_studies", "skipped_reason")
    op.drop_column("job_studies", "skipped")
    op.drop_column("jobs", "modalities")
