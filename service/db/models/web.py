"""The web UI's tables: user accounts, server-side sessions, failed sign-ins, sweep heartbeats.

Sessions live in the database, not in the cookie: the cookie only names a row (by a random
secret whose SHA-256 is stored), so a session can be revoked (sign-out, ``deidgate user
disable``, a revoked API token) and expires on the server's clock, idle and absolute. Failed
sign-ins are rows so that every API process shares one rate limit; they keep a keyed hash of
the account name typed (people type passwords into the name field) and the client address.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base, utcnow

TS = DateTime(timezone=True)


class WebUser(Base):
    """A person who signs in to the web UI. ``password_hash`` is an argon2id PHC string."""

    __tablename__ = "web_users"
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'staff', 'auditor', 'service')", name="role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)

    def __repr__(self) -> str:
        return f"WebUser(id={self.id!r}, name={self.name!r}, role={self.role!r})"


class WebSession(Base):
    """One signed-in browser: a user account's or an API token's (exactly one of the two).

    ``token_id`` has no foreign key: the API tokens live on another migration branch, and every
    request checks the token is still active anyway (a revoked token ends its sessions)."""

    __tablename__ = "web_sessions"
    __table_args__ = (
        CheckConstraint("(user_id IS NULL) <> (token_id IS NULL)", name="one_principal"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("web_users.id", ondelete="CASCADE"), index=True, nullable=True)
    token_id: Mapped[int | None] = mapped_column(Integer, index=True, nullable=True)
    client: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(TS)
    revoked_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    revoked_why: Mapped[str | None] = mapped_column(String(32), nullable=True)

    def __repr__(self) -> str:
        return f"WebSession(id={self.id!r}, user_id={self.user_id!r}, token_id={self.token_id!r})"


class WebLoginFailure(Base):
    """A failed sign-in, counted for the rate limits and pruned after the window."""

    __tablename__ = "web_login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_key: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    client: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(TS, default=utcnow, index=True)


class SweepHeartbeat(Base):
    """When each node's sweeper last ran and what it re-enqueued (the admin health page)."""

    __tablename__ = "sweep_heartbeats"

    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    counts: Mapped[str] = mapped_column(Text, default="{}")
