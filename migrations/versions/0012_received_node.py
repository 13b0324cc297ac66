"""Several hosts: dicom_received_instances.node (the host whose spool holds the identified file)
and dicom_association_leases (the per-PACS association limit, across processes and hosts).

Whoever links or re-sends an instance (a retrieve task on the default queue, a sweep, a retry on
another host) must route its de-identification to the queue of the host holding the file, not
its own. Rows received before there was a column were received on a single host: they get the
default node, the node name of the host that runs the upgrade (``DEIDGATE_NODE_NAME``, passed in
by ``service.db.migrate``; else the host name, as ``service.core.queues.node_name`` does). A
multi-host site upgrading with files still in several spools sets each host's rows after (the
sweep then routes them right).

Revision ID: 0012_received_node
Revises: 0003_dicom
Create Date: 2026-12-07
"""

from __future__ import annotations

import socket

import sqlalchemy as sa
from alembic import context, op

revision = "0012_received_node"
down_revision = "0003_dicom"
branch_labels = None
depends_on = None


def default_node() -> str:
    given = context.config.attributes.get("default_node")
    return str(given or socket.gethostname().split(".")[0] or "local")[:64]


def upgrade() -> None:
    with op.batch_alter_table("dicom_received_instances") as batch:
        batch.add_column(sa.Column("node", sa.String(64), nullable=True))
    bind = op.get_bind()
    bind.execute(sa.text("UPDATE dicom_received_instances SET node = :n WHERE node IS NULL"),
                 {"n": default_node()})
    with op.batch_alter_table("dicom_received_instances") as batch:
        batch.alter_column("node", existing_type=sa.String(64), nullable=False)
        batch.create_index("ix_dicom_received_instances_node", ["node"])
    op.create_table(
        "dicom_association_leases",
        sa.Column("peer", sa.String(160), primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True),
        sa.Column("holder", sa.String(96), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dicom_association_leases")
    with op.batch_alter_table("dicom_received_instances") as batch:
        batch.drop_index("ix_dicom_received_instances_node")
        batch.drop_column("node")
