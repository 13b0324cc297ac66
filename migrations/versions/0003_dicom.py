"""DICOM edge: local AE, PACS nodes, calling-AE allow-list, received instances, refused attempts.

Revision ID: 0003_dicom
Revises: 0001_base
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_dicom"
down_revision = "0001_base"
branch_labels = ("dicom",)
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dicom_local_ae",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("ae_title", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("max_pdu", sa.Integer, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "dicom_pacs_nodes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("ae_title", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("retrieve", sa.String(8), nullable=False),
        sa.Column("max_associations", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("name", name="uq_dicom_pacs_nodes_name"),
    )
    op.create_table(
        "dicom_allowed_callers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ae_title", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("ae_title", "host", name="uq_dicom_allowed_callers_ae_host"),
    )
    op.create_index(
        "ix_dicom_allowed_callers_ae_title", "dicom_allowed_callers", ["ae_title"]
    )
    op.create_table(
        "dicom_received_instances",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sop_key", sa.String(64), nullable=False),
        sa.Column("series_key", sa.String(64), nullable=False),
        sa.Column("study_key", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("transfer_syntax", sa.String(64), nullable=False),
        sa.Column("spool_path", sa.String(1024), nullable=False),
        sa.Column("calling_ae", sa.String(16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.UniqueConstraint("sop_key", name="uq_dicom_received_instances_sop_key"),
    )
    for col in ("series_key", "study_key", "received_at", "status", "job_id"):
        op.create_index(
            f"ix_dicom_received_instances_{col}", "dicom_received_instances", [col]
        )
    op.create_table(
        "dicom_association_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("calling_ae", sa.String(16), nullable=False),
        sa.Column("called_ae", sa.String(16), nullable=False),
        sa.Column("peer_host", sa.String(255), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_index("ix_dicom_association_attempts_at", "dicom_association_attempts", ["at"])


def downgrade() -> None:
    op.drop_table("dicom_association_attempts")
    op.drop_table("dicom_received_instances")
    op.drop_table("dicom_allowed_callers")
    op.drop_table("dicom_pacs_nodes")
    op.drop_table("dicom_local_ae")
