"""API tokens: generation, hashing, authentication, and the operations the CLI exposes.

Why SHA-256 and not bcrypt/argon2: slow, salted hashes exist to protect *low-entropy* secrets
(passwords a person chose) against offline guessing. Our tokens are 256 random bits from
``secrets``; no amount of guessing recovers one from its digest, with or without salt. A fast,
unsalted digest also lets every request find its token with one indexed equality lookup instead
of trying a slow hash against every row. The raw token is shown once at creation and never
stored; the database only ever sees the digest and a short random, non-secret ``prefix`` that
identifies the token in listings (like GitHub's ``ghp_`` tokens).

Token format: ``dgt_<prefix>_<secret>``, where prefix is 8 hex digits and secret is
``token_urlsafe(32)``. The prefix is independent randomness, so showing it costs no entropy.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.errors import DeidgateError
from service.db.base import as_utc, utcnow
from service.db.models.auth import ApiToken

TOKEN_SCHEME = "dgt"  # noqa: S105 - the public scheme prefix, not a secret
_TOKEN_RE = re.compile(r"^dgt_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Recording every request's use would turn each read into a write; a minute's resolution is
# enough to tell an operator which tokens are still alive.
_LAST_USED_RESOLUTION = timedelta(minutes=1)


class Role(StrEnum):
    admin = "admin"
    staff = "staff"
    auditor = "auditor"
    service = "service"


class TokenError(DeidgateError):
    code = "token"


class TokenNotFound(TokenError):
    code = "token-not-found"


class InvalidToken(TokenError):
    """Authentication failed; ``reason`` says why without echoing the presented value."""

    code = "invalid-token"


@dataclass(frozen=True)
class Principal:
    """Who is calling: what routes see instead of the token row."""

    token_id: int
    name: str
    role: Role
    prefix: str

    @property
    def actor(self) -> str:
        """The audit-log actor: token names are unique forever, so this names one caller."""
        return f"token:{self.name}"


@dataclass(frozen=True)
class IssuedToken:
    """The only object that ever holds a raw token; printed once, then dropped."""

    id: int
    name: str
    role: Role
    prefix: str
    token: str

    def __repr__(self) -> str:
        return f"IssuedToken(id={self.id!r}, name={self.name!r}, prefix={self.prefix!r})"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def generate_token() -> tuple[str, str]:
    """A fresh ``(token, prefix)`` pair."""
    prefix = secrets.token_hex(4)
    return f"{TOKEN_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}", prefix


def create_token(session: Session, *, role: Role | str, name: str | None = None) -> IssuedToken:
    """Issue a token; the caller commits and shows ``IssuedToken.token`` exactly once."""
    try:
        role = Role(role)
    except ValueError:
        raise TokenError(
            f"unknown role; choose one of {', '.join(r.value for r in Role)}", code="token-role"
        ) from None
    token, prefix = generate_token()
    while session.scalar(select(ApiToken.id).where(ApiToken.prefix == prefix)) is not None:
        token, prefix = generate_token()  # 32-bit prefixes: keep them unique, not just likely
    name = name or f"{role.value}-{prefix}"
    if not _NAME_RE.match(name):
        raise TokenError(
            "token name must be 1-64 characters: letters, digits, '.', '_' or '-'",
            code="token-name",
        )
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise TokenError(
            "a token with this name exists (names are never reused)", code="token-name"
        )
    row = ApiToken(name=name, role=role.value, prefix=prefix, token_hash=hash_token(token))
    session.add(row)
    session.flush()
    return IssuedToken(id=row.id, name=name, role=role, prefix=prefix, token=token)


def list_tokens(session: Session, *, include_revoked: bool = True) -> list[ApiToken]:
    q = select(ApiToken).order_by(ApiToken.id)
    if not include_revoked:
        q = q.where(ApiToken.revoked_at.is_(None))
    return list(session.scalars(q))


def revoke_token(session: Session, token_id: int) -> ApiToken:
    """Revoke (idempotently); the row stays so its name keeps meaning the same caller."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise TokenNotFound(f"no token with id {token_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def authenticate(session: Session, token: str) -> Principal:
    """Resolve a presented bearer token, or raise ``InvalidToken`` saying why."""
    m = _TOKEN_RE.match(token)
    if m is None:
        raise InvalidToken("malformed API token (expected dgt_<prefix>_<secret>)")
    digest = hash_token(token)
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        raise InvalidToken("unknown API token")
    if row.revoked_at is not None:
        raise InvalidToken("API token has been revoked")
    now = utcnow()
    last = as_utc(row.last_used_at)
    if last is None or now - last >= _LAST_USED_RESOLUTION:
        row.last_used_at = now
    return Principal(token_id=row.id, name=row.name, role=Role(row.role), prefix=row.prefix)
