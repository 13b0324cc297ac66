"""Security area: a sealing key id on every mapping row, and the table of sealing keys.

Existing rows were sealed under the site key's own derivations: they get the id ``site``, which
is also the active key until the first ``deidgate keys rotate``. The "no UPDATE" trigger on
``audit_mappings`` is narrowed to the columns that say what a row means (kind, pseudonym,
provenance): re-keying (``deidgate keys rekey``) rewrites only ``original_ct``,
``lookup_hash`` and ``key_id``, and the ciphertext stays bound to (kind, pseudonym) by its
associated data, so an update cannot move an identity onto another pseudonym.

Revision ID: 0011_mapping_key_id
Revises: 0002_audit
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_mapping_key_id"
down_revision = "0002_audit"
branch_labels = None  # continues the "audit" branch
depends_on = None

TS = sa.DateTime(timezone=True)
_FIXED = ("id, kind, namespace, pseudonym, patient_pseudonym, policy_name, policy_version, "
          "source, job_id, created_at")

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION deidgate_audit_refuse() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'deidgate: % on % is refused (append-only audit table)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql
"""


def _triggers(dialect: str, *, columns: str | None) -> tuple[str, str]:
    """(drop, create) for the mapping trigger; ``columns``: fire only on updates of these."""
    of = f"UPDATE OF {columns}" if columns else "UPDATE"
    if dialect == "postgresql":
        return ("DROP TRIGGER IF EXISTS audit_mappings_no_update ON audit_mappings",
                f"CREATE TRIGGER audit_mappings_no_update BEFORE {of} ON audit_mappings "
                "FOR EACH ROW EXECUTE FUNCTION deidgate_audit_refuse()")
    return ("DROP TRIGGER IF EXISTS audit_mappings_no_update",
            f"CREATE TRIGGER audit_mappings_no_update BEFORE {of} ON audit_mappings "
            "BEGIN SELECT RAISE(ABORT, 'deidgate: audit_mappings rows are never updated'); END")


def upgrade() -> None:
    op.add_column("audit_mappings", sa.Column("key_id", sa.String(32), nullable=False,
                                              server_default="site"))
    op.create_index("ix_audit_mappings_key_id", "audit_mappings", ["key_id"])
    keys = op.create_table(
        "audit_seal_keys",
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("fingerprint", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("activated_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("key_id", name="pk_audit_seal_keys"),
    )
    now = sa.func.now()
    op.execute(keys.insert().values(key_id="site", fingerprint="", active=True,
                                    created_at=now, activated_at=now))
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(_PG_FUNCTION)  # the audit branch's; recreated in case it was dropped
    for stmt in _triggers(dialect, columns=_FIXED):
        op.execute(stmt)


def downgrade() -> None:
    """Only before any rotation: rows under another key would lose the id that opens them."""
    op.drop_table("audit_seal_keys")
    op.drop_index("ix_audit_mappings_key_id", table_name="audit_mappings")
    with op.batch_alter_table("audit_mappings") as batch:  # SQLite: copies the table
        batch.drop_column("key_id")
    dialect = op.get_bind().dialect.name
    for stmt in _triggers(dialect, columns=None):  # after the copy, which drops triggers
        op.execute(stmt)
