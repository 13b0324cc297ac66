"""job_instances.received_key (a stringified integer id) -> received_id, an integer foreign key
to dicom_received_instances; every other ``*_key`` column is a keyed hash, this one was not.

Existing rows keep their link: the id is the same number. A row whose received instance does
not exist cannot be given the foreign key; the upgrade then stops with the count (nothing is
dropped) so an operator can look before anything is lost.

Revision ID: 0009_job_instance_received_id
Revises: 0006_jobs
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_job_instance_received_id"
down_revision = "0006_jobs"
branch_labels = None
depends_on = "0003_dicom"  # the table the new foreign key points at

FK = "fk_job_instances_received_id_dicom_received_instances"
UQ = "uq_job_instances_job_received"


def upgrade() -> None:
    bind = op.get_bind()
    orphans = bind.execute(sa.text(
        "SELECT count(*) FROM job_instances ji WHERE NOT EXISTS (SELECT 1 FROM "
        "dicom_received_instances ri WHERE CAST(ri.id AS VARCHAR(64)) = ji.received_key)"
    )).scalar_one()
    if orphans:
        raise RuntimeError(f"{orphans} job instance rows name a received instance that does not "
                           "exist; resolve them before upgrading (nothing was changed)")
    with op.batch_alter_table("job_instances") as batch:
        batch.add_column(sa.Column("received_id", sa.Integer, nullable=True))
    op.execute("UPDATE job_instances SET received_id = CAST(received_key AS INTEGER)")
    with op.batch_alter_table("job_instances") as batch:
        batch.drop_constraint(UQ, type_="unique")
        batch.drop_index("ix_job_instances_received_key")
        batch.drop_column("received_key")
        batch.alter_column("received_id", existing_type=sa.Integer, nullable=False)
        batch.create_foreign_key(FK, "dicom_received_instances", ["received_id"], ["id"])
        batch.create_unique_constraint(UQ, ["job_id", "received_id"])
        batch.create_index("ix_job_instances_received_id", ["received_id"])


def downgrade() -> None:
    with op.batch_alter_table("job_instances") as batch:
        batch.add_column(sa.Column("received_key", sa.String(64), nullable=True))
    op.execute("UPDATE job_instances SET received_key = CAST(received_id AS VARCHAR(64))")
    with op.batch_alter_table("job_instances") as batch:
        batch.drop_constraint(UQ, type_="unique")
        batch.drop_index("ix_job_instances_received_id")
        batch.drop_constraint(FK, type_="foreignkey")
        batch.drop_column("received_id")
        batch.alter_column("received_key", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint(UQ, ["job_id", "received_key"])
        batch.create_index("ix_job_instances_received_key", ["received_key"])
