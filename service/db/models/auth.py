"""API tokens: who may call the REST API, in which role.

Only a SHA-256 digest of each token is stored (see ``service.core.security`` for why a fast hash
is right here), plus a short random ``prefix`` that names the token in listings and logs without
revealing it. Revoked tokens stay in the table so audit actors remain resolvable and a token name
is never reused for someone else.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base, utcnow

ROLES = ("admin", "staff", "auditor", "service")


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'staff', 'auditor', 'service')", name="role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def __repr__(self) -> str:
        return f"ApiToken(id={self.id!r}, name={self.name!r}, role={self.role!r})"
