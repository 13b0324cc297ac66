"""DICOM TLS per node: policy and certificate pins on PACS nodes and allow-list entries.

``tls_mode`` (off | tls | mtls-required), ``tls_pin_sha256`` (a certificate's SHA-256, hex),
``tls_pin_name`` (its CN or a SubjectAltName), ``tls_allow_plain`` (incoming plain DICOM still
accepted from this node during a migration). Existing rows keep plain DICOM (``off``).

Revision ID: 0013_dicom_tls
Revises: 0012_received_node
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_dicom_tls"
down_revision = "0012_received_node"
branch_labels = None
depends_on = None

TABLES = ("dicom_pacs_nodes", "dicom_allowed_callers")
MODES = "tls_mode IN ('off', 'tls', 'mtls-required')"


def upgrade() -> None:
    for table in TABLES:
        # batch mode: SQLite cannot add a CHECK constraint to an existing table in place
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("tls_mode", sa.String(16), nullable=False,
                                       server_default="off"))
            batch.add_column(sa.Column("tls_pin_sha256", sa.String(64), nullable=True))
            batch.add_column(sa.Column("tls_pin_name", sa.String(64), nullable=True))
            batch.add_column(sa.Column("tls_allow_plain", sa.Boolean, nullable=False,
                                       server_default=sa.false()))
            batch.create_check_constraint(op.f(f"ck_{table}_tls_mode"), MODES)


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(f"ck_{table}_tls_mode"), type_="check")
            for col in ("tls_allow_plain", "tls_pin_name", "tls_pin_sha256", "tls_mode"):
                batch.drop_column(col)
