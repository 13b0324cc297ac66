"""Audit area: pseudonym mappings, hash-chained event log, chain head, append-only triggers.

The triggers make tampering a deliberate act (a superuser must drop them first); the hash chain
(service.audit.chain) still detects what was done after that.

Revision ID: 0002_audit
Revises: 0001_base
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_audit"
down_revision = "0001_base"
branch_labels = ("audit",)
depends_on = None

GENESIS = "0" * 64

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION deidgate_audit_refuse() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'deidgate: % on % is refused (append-only audit table)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql
"""

_PG_TRIGGERS = [
    "CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE ON audit_events "
    "FOR EACH ROW EXECUTE FUNCTION deidgate_audit_refuse()",
    "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
    "FOR EACH STATEMENT EXECUTE FUNCTION deidgate_audit_refuse()",
    "CREATE TRIGGER audit_mappings_no_update BEFORE UPDATE ON audit_mappings "
    "FOR EACH ROW EXECUTE FUNCTION deidgate_audit_refuse()",
]

_SQLITE_TRIGGERS = [
    "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
    "BEGIN SELECT RAISE(ABORT, 'deidgate: audit_events is append-only'); END",
    "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
    "BEGIN SELECT RAISE(ABORT, 'deidgate: audit_events is append-only'); END",
    "CREATE TRIGGER audit_mappings_no_update BEFORE UPDATE ON audit_mappings "
    "BEGIN SELECT RAISE(ABORT, 'deidgate: audit_mappings rows are never updated'); END",
]


def upgrade() -> None:
    op.create_table(
        "audit_mappings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("namespace", sa.String(16), nullable=False),
        sa.Column("pseudonym", sa.String(128), nullable=False),
        sa.Column("lookup_hash", sa.String(64), nullable=False),
        sa.Column("original_ct", sa.LargeBinary(), nullable=False),
        sa.Column("patient_pseudonym", sa.String(128), nullable=True),
        sa.Column("policy_name", sa.String(128), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("source", sa.String(256), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_mappings"),
        sa.UniqueConstraint("kind", "pseudonym", name="uq_audit_mappings_kind_pseudonym"),
    )
    op.create_index("ix_audit_mappings_pseudonym", "audit_mappings", ["pseudonym"])
    op.create_index("ix_audit_mappings_namespace_lookup", "audit_mappings",
                    ["namespace", "lookup_hash"])
    op.create_index("ix_audit_mappings_patient", "audit_mappings", ["patient_pseudonym"])

    op.create_table(
        "audit_events",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_kind", "audit_events", ["kind"])
    op.create_index("ix_audit_events_hash", "audit_events", ["hash"])

    head = op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_chain_head"),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS}])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        for stmt in _PG_TRIGGERS:
            op.execute(stmt)
    else:
        for stmt in _SQLITE_TRIGGERS:
            op.execute(stmt)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update_delete ON audit_events")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
        op.execute("DROP TRIGGER IF EXISTS audit_mappings_no_update ON audit_mappings")
        op.execute("DROP FUNCTION IF EXISTS deidgate_audit_refuse()")
    op.drop_table("audit_chain_head")
    op.drop_index("ix_audit_events_hash", table_name="audit_events")
    op.drop_index("ix_audit_events_kind", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_audit_mappings_patient", table_name="audit_mappings")
    op.drop_index("ix_audit_mappings_namespace_lookup", table_name="audit_mappings")
    op.drop_index("ix_audit_mappings_pseudonym", table_name="audit_mappings")
    op.drop_table("audit_mappings")
