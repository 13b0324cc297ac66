"""Web UI: user accounts, sessions, failed sign-ins, sweep heartbeats, per-instance actions.

Revision ID: 0007_web
Revises: 0001_base
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_web"
down_revision = "0001_base"
branch_labels = ("web",)
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "web_users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("password_changed_at", TS, nullable=False),
        sa.Column("last_login_at", TS, nullable=True),
        sa.Column("disabled_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_web_users"),
        sa.UniqueConstraint("name", name="uq_web_users_name"),
        sa.CheckConstraint("role IN ('admin', 'staff', 'auditor', 'service')", name="role"),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("revoked_why", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_web_sessions"),
        sa.UniqueConstraint("key_hash", name="uq_web_sessions_key_hash"),
        sa.ForeignKeyConstraint(["user_id"], ["web_users.id"], ondelete="CASCADE",
                                name="fk_web_sessions_user_id_web_users"),
        sa.CheckConstraint("(user_id IS NULL) <> (token_id IS NULL)", name="one_principal"),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])
    op.create_index("ix_web_sessions_token_id", "web_sessions", ["token_id"])
    op.create_table(
        "web_login_failures",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("account_key", sa.String(64), nullable=True),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_web_login_failures"),
    )
    op.create_index("ix_web_login_failures_account_key", "web_login_failures", ["account_key"])
    op.create_index("ix_web_login_failures_client", "web_login_failures", ["client"])
    op.create_index("ix_web_login_failures_at", "web_login_failures", ["at"])
    op.create_table(
        "sweep_heartbeats",
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("node", name="pk_sweep_heartbeats"),
    )
    op.create_table(
        "deid_action_profiles",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("rows", sa.Text(), nullable=False),
        sa.Column("n_rows", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_deid_action_profiles"),
    )
    op.create_table(
        "deid_instance_actions",
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("profile_digest", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("policy_name", sa.String(128), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("pixel_action", sa.String(16), nullable=True),
        sa.Column("pixel_regions", sa.Integer(), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("sop_instance_uid", name="pk_deid_instance_actions"),
        sa.ForeignKeyConstraint(
            ["profile_digest"], ["deid_action_profiles.digest"], ondelete="RESTRICT",
            name="fk_deid_instance_actions_profile_digest_deid_action_profiles"),
    )
    op.create_index("ix_deid_instance_actions_study_instance_uid", "deid_instance_actions",
                    ["study_instance_uid"])
    op.create_index("ix_deid_instance_actions_profile_digest", "deid_instance_actions",
                    ["profile_digest"])


def downgrade() -> None:
    op.drop_table("deid_instance_actions")
    op.drop_table("deid_action_profiles")
    op.drop_table("sweep_heartbeats")
    op.drop_table("web_login_failures")
    op.drop_table("web_sessions")
    op.drop_table("web_users")
